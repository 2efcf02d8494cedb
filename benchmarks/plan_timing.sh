#!/usr/bin/env bash
# Wall time of `bench plan MATRIX` in two checkouts (e.g. before and after a change), interleaved,
# each run in its own process with the same Python. One JSON line per run is appended to
# benchmarks/results/plan_timing.jsonl (with the load average: a busy machine says so).
#
#   bash benchmarks/plan_timing.sh /path/to/old-checkout /path/to/new-checkout [matrices/paper.yaml] [reps]
set -euo pipefail
old="$1"; new="$2"; matrix="${3:-matrices/paper.yaml}"; reps="${4:-3}"
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-$here/../.venv/bin/python}"
out="$here/results/plan_timing.jsonl"
results="$(mktemp -d)"
for rep in $(seq "$reps"); do
  for side in old new; do
    dir="$old"; [ "$side" = new ] && dir="$new"
    sha="$(git -C "$dir" rev-parse --short HEAD)"
    start=$(date +%s.%N)
    (cd "$dir" && "$python" -m bench plan "$matrix" --results-dir "$results" >/dev/null)
    end=$(date +%s.%N)
    load="$(cut -d' ' -f1 /proc/loadavg)"
    line="{\"what\": \"bench plan $matrix\", \"side\": \"$side\", \"sha\": \"$sha\", \"rep\": $rep, \"wall_s\": $(echo "$end - $start" | bc), \"loadavg_1m\": $load, \"cpus\": $(nproc), \"host\": \"$(hostname)\"}"
    echo "$line" | tee -a "$out"
  done
done
