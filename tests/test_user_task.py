"""A user's task from a CSV outside the repository, through `bench run` and through stock lm-eval on
bench's adapter: the same outputs and scores (scripts/user_task_check.py; CI also runs it from the wheel)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_user_task_scores_the_same_in_bench_and_in_stock_lm_eval(tmp_path):
    data = Path(os.environ.get("BENCH_DATA") or REPO.parent / "shared" / "data")
    if not data.is_dir():
        pytest.skip(f"no FinLoRA data at {data} (the tiny model's tokenizer is trained on it)")
    env = {
        **os.environ,
        "BENCH_DATA": str(data),
        "BENCH_CACHE": os.environ.get("BENCH_CACHE", str(tmp_path / "c")),
    }
    work = tmp_path / "outside"  # no part of the repository on the path or in the folder
    work.mkdir()
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "user_task_check.py"), str(work)], cwd=work,
                          env=env, capture_output=True, text=True, timeout=1500)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert '"outputs_identical": true' in done.stdout and "user task check: ok" in done.stdout
