"""A user's own task, end to end, as a new user meets it: a task file in a folder outside the repository
reading a CSV with its own column names and a three-label set of its own, trained and evaluated on the
tiny model through `bench run`, then the same task through stock `lm_eval --include_path` on bench's
adapter; the two must give the same outputs and the same scores. Exit 0 when they do.

    BENCH_DATA=../shared/data python scripts/user_task_check.py WORK_DIR

Run by tox's `smoke` environment (tox.ini) with the installed wheel's Python, from a folder outside
the checkout (nothing of it on the path). BENCH_DATA is needed only to build the tiny model's tokenizer.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

WORDS = {
    "hawkish": "will raise rates again to fight inflation",
    "dovish": "will cut rates to support jobs",
    "neutral": "will keep rates where they are",
}
CODES = {"dovish": 0, "hawkish": 1, "neutral": 2}
TASK = """\
bench_task: 1
name: fomc_stance
data:
  train: data/fomc_train.csv
  test: data/fomc_test.csv
prompt: "Instruction: What is the stance of this sentence? Please choose an answer from \\
  {hawkish/dovish/neutral}.\\nInput: {{ sentence }}\\nAnswer: "
target: stance_code
label_map: {0: dovish, 1: hawkish, 2: neutral}
answer: {type: label, labels: [hawkish, dovish, neutral]}
"""
MATRIX = """\
name: stance
tasks_dir: my_tasks
models: {tiny: {source: tiny}}
axes: {model: [tiny], quant: [{bits: 16, rank: 8}], task: [fomc_stance], eval_bits: [16]}
train: {max_steps: 100, batch_per_gpu: 8, lr: 3.0e-3, optimizer: adamw, precision: fp32,
        target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]}
eval: {batch_size: 8, bootstrap: 0, precision: fp32}
"""
# fp32 pinned: stock lm-eval below computes in float32 too (bench's default is bf16 where the CPU has it).


def write_task(work: Path) -> Path:
    folder = work / "my_tasks"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "fomc_stance.yaml").write_text(TASK)
    for side, n, start in (("train", 90, 0), ("test", 24, 500)):
        with open(folder / "data" / f"fomc_{side}.csv", "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "sentence", "stance_code"])
            for i in range(start, start + n):
                label = list(WORDS)[i % 3]
                out.writerow([i, f"The committee {WORDS[label]} (meeting {i}).", CODES[label]])
    (work / "stance.yaml").write_text(MATRIX)
    return work / "stance.yaml"


def run(cmd: list[str], cwd: Path) -> str:
    done = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done.stdout


def bench_record(results: Path) -> tuple[dict, Path]:
    records = [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines()]
    (evaluation,) = [r for r in records if r["phase"] == "eval" and r["status"] == "ok"]
    cell_dir = next((results / "cells").glob("*"))
    return evaluation, cell_dir


def stock_lm_eval(work: Path, cell_dir: Path) -> tuple[dict, list[dict]]:
    python = sys.executable
    include = run([python, "-m", "bench", "tasks", "--path", "--tasks-dir", "my_tasks"], work).strip()
    # the tiny model bench trained on: built once per data folder into bench's cache, found there again
    code = (
        "import os, pathlib; from bench.models.tiny import tiny_model_dir as d; "
        "print(d(pathlib.Path(os.environ['BENCH_DATA'])))"
    )
    tiny = run([python, "-c", code], work).strip()
    out = work / "lm_eval_out"
    run([python, "-m", "lm_eval", "--include_path", include, "--tasks", "fomc_stance", "--model", "hf",
         "--model_args", f"pretrained={tiny},peft={cell_dir / 'adapter'},dtype=float32", "--device", "cpu",
         "--batch_size", "8", "--log_samples", "--output_path", str(out)], work)  # fmt: skip
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["fomc_stance"]
    samples = [
        json.loads(line) for line in next(out.rglob("samples_fomc_stance_*.jsonl")).read_text().splitlines()
    ]
    return results, sorted(samples, key=lambda s: s["doc_id"])


def main() -> int:
    work = Path(sys.argv[1]).resolve()
    matrix = write_task(work)
    bench_run = [sys.executable, "-m", "bench", "run", str(matrix), "--results-dir", "results"]
    run(bench_run + ["--reports-dir", "reports"], work)
    record, cell_dir = bench_record(work / "results")
    ours = {s["scorer"]: s for s in record["scores"]}
    theirs, samples = stock_lm_eval(work, cell_dir)
    bench_rows = [
        json.loads(line) for line in (cell_dir / "samples_fomc_stance.jsonl").read_text().splitlines()
    ]
    same_outputs = [r["output"] for r in bench_rows] == [s["filtered_resps"][0] for s in samples]
    checks = {
        f"{metric}_{scorer}": (ours[scorer][key], theirs[f"{metric}_{scorer},first_line"])
        for scorer in ("finlora", "strict", "finlora2025")
        for metric, key in (("acc", "accuracy"), ("f1", "weighted_f1"))
    }
    print(json.dumps({"outputs_identical": same_outputs, "scores (bench, stock lm-eval)": checks}, indent=1))
    distinct = sorted({r["output"] for r in bench_rows})
    print("distinct outputs:", distinct)
    # One answer for every row would make "the same outputs" say little about the prompts: the adapter
    # must have learned the task (100 steps at 3e-3 answer all 24 test rows right here; 60 at 1e-2, the
    # first setting, answered "neutral" to all).
    if len(distinct) < 2:
        print("user task check: the adapter gives one answer for every row; nothing to compare")
        return 1
    agree = same_outputs and all(abs(a - b) < 1e-9 for a, b in checks.values())
    print("user task check: " + ("ok" if agree else "MISMATCH"))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
