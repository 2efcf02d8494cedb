#!/usr/bin/env bash
# The wheel as a user installs it, not the editable checkout: build it, install it with torch into a
# fresh virtualenv, then from a folder outside the repository check the task YAMLs it carries and run
# the smoke matrix to its report. CI runs this after the test suite.
#
#   BENCH_DATA=../shared/data bash scripts/wheel_check.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
: "${BENCH_DATA:?set BENCH_DATA to the FinLoRA data folder}"

python3 -m pip wheel --no-deps -q -w "$work/dist" "$repo"
python3 -m venv "$work/venv"
# torch pinned first, as the README installs it: the CPU build on local disk.
"$work/venv/bin/pip" install -q torch==2.13.0 "$work"/dist/bench-*.whl
cd "$work"  # nothing of the repository on the path from here on
"$work/venv/bin/python" -c "import bench, sys; assert '$repo' not in bench.__file__, bench.__file__"
"$work/venv/bin/bench" tasks --path
"$work/venv/bin/bench" tasks --check
"$work/venv/bin/bench" run "$repo/matrices/smoke.yaml" --results-dir "$work/results" --reports-dir "$work/reports"
test -s "$work/reports/smoke.html" && test -s "$work/reports/smoke.md"
# A user's own task from a CSV in a folder of theirs, trained and evaluated through the wheel's bench,
# then through stock lm-eval on bench's adapter: same outputs, same scores.
mkdir "$work/user" && cp "$repo/scripts/user_task_check.py" "$work/user_task_check.py"
"$work/venv/bin/python" "$work/user_task_check.py" "$work/user"
echo "wheel check: ok ($(basename "$work"/dist/bench-*.whl))"
