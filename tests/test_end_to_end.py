"""The smoke matrix through the real stack: bitsandbytes 4/8-bit, peft, DeepSpeed, lm-eval, on CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench.models.loading import compute_precision

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bench(*args, env) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env, cwd=REPO
    )


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir, bench_cache):
    out = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, "BENCH_DATA": str(data_dir), "BENCH_CACHE": str(bench_cache)}
    args = ("--results-dir", str(out / "results"))
    first = bench("run", "matrices/smoke.yaml", *args, "--reports-dir", str(out / "reports"), env=env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    records = [json.loads(line) for line in (out / "results" / "records.jsonl").read_text().splitlines()]
    return out, env, args, first, records


def test_every_cell_has_ok_train_and_eval_records_with_real_metrics(smoke_run):
    _, _, _, first, records = smoke_run
    assert {(r["cell_id"].split("__")[2], r["phase"], r["status"]) for r in records} == {
        ("4bit-r4", "train", "ok"), ("4bit-r4", "eval", "ok"),
        ("8bit-r8", "train", "ok"), ("8bit-r8", "eval", "ok"),
        ("base", "eval", "ok"),
    }  # fmt: skip
    trains = {r["cell"]["bits"]: r["metrics"] for r in records if r["phase"] == "train"}
    # The real bitsandbytes layers: 2 layers x 7 projections of the tiny Llama.
    assert trains[4]["quantized_linear"] == {"Linear4bit": 14}
    assert trains[8]["quantized_linear"] == {"Linear8bitLt": 14}
    for m in trains.values():
        assert m["train_loss_last"] < m["train_loss_first"]
        assert m["steps"] == 20 and m["tokens_per_s"] > 0 and m["adapter_bytes"] > 0
        assert m["optimizer_requested"] == "zero_one_adam" and m["optimizer"] == "adamw"
        assert "CPU" in m["optimizer_fallback"]
        assert m["gpu_mem_sum_gb"] is None and m["gpu_mem_null_reason"] and m["peak_rss_gb"] > 0
    assert trains[8]["trainable_params"] == 2 * trains[4]["trainable_params"]  # rank 8 vs 4
    # Whatever this CPU is, the records say the dtype bench.core.precision picks for it, and why.
    chosen = compute_precision(torch.device("cpu"), "bf16")
    for r in records:
        assert r["metrics"]["precision_reason"] == chosen.reason
        assert r["metrics"]["precision"].split()[0] == chosen.dtype  # "bf16 compute, fp32 LoRA weights"
    for r in (r for r in records if r["phase"] == "eval"):
        scorers = {s["scorer"]: s for s in r["scores"] if s["task"] == "fpb"}
        assert set(scorers) == {"finlora", "strict", "finlora2025"} and scorers["finlora"]["n"] == 48
        lo, hi = scorers["finlora"]["accuracy_ci"]
        assert lo <= scorers["finlora"]["accuracy"] <= hi
        assert r["metrics"]["s_per_example"] > 0 and r["env"]["packages"]["bitsandbytes"]
    assert "[5/5]" in first.stdout and "step 20/20" in first.stdout


def test_second_run_plans_nothing_and_report_shows_every_cell(smoke_run):
    out, env, args, _, records = smoke_run
    again = bench("run", "matrices/smoke.yaml", *args, "--reports-dir", str(out / "reports"), env=env)
    assert again.returncode == 0 and "0 steps to run" in again.stdout
    planned = bench("plan", "matrices/smoke.yaml", *args, env=env)
    assert planned.stdout.count("done ") == 3
    markdown = (out / "reports" / "smoke.md").read_text()
    for cell_id in {r["cell_id"] for r in records}:
        assert (
            cell_id.split("__")[2].replace("bit-r", "-bit r") in markdown
            or cell_id.split("__")[2] in markdown
        )
    assert (out / "reports" / "smoke.html").is_file()


def test_one_loaded_base_gives_what_a_fresh_load_per_cell_gives(smoke_run, data_dir):
    """The run evaluated base, 4-bit and 8-bit adapters in one worker on one loaded 8-bit base; each
    evaluated alone on a freshly loaded base must give the same generations and scores."""
    from bench.core.matrix import load
    from bench.orchestration.launch import Launcher
    from bench.orchestration.runner import Step

    out, _, _, first, records = smoke_run
    evals = {r["cell_id"]: r for r in records if r["phase"] == "eval"}
    assert sorted(r["metrics"]["base_reused"] for r in evals.values()) == [False, True, True]
    assert {r["metrics"]["base_shared_by"] for r in evals.values()} == {3}
    assert "(and 2 more on one loaded base)" in first.stdout
    events = []
    launcher = Launcher((out / "results").resolve(), data_dir, "smoke", echo=False, on_event=events.append)
    for cell in load(REPO / "matrices" / "smoke.yaml").cells:
        samples = out / "results" / evals[cell.id]["artifacts"]["samples_fpb"]
        grouped = samples.read_text()
        alone = launcher(Step(cell, "eval"))
        assert alone.status == "ok", alone.log_tail
        assert alone.metrics["base_shared_by"] == 1 and not alone.metrics["base_reused"]
        assert samples.read_text() == grouped, cell.id
        assert alone.scores == evals[cell.id]["scores"]
        # the console's bar for this cell: rows from 0 to all 48, in batches of the cell's batch size
        rows = [(e["done"], e["total"]) for e in events if e["cell"] == cell.id and e["phase"] == "eval"]
        assert rows[0] == (0, 48) and rows[-1] == (48, 48), rows
        assert all(b - a <= cell.eval.batch_size for (a, _), (b, _) in zip(rows, rows[1:], strict=False))


def test_training_sends_one_event_per_step_to_the_console_and_none_to_its_log(smoke_run, data_dir, tmp_path):
    from bench.core.matrix import load
    from bench.orchestration.launch import Launcher
    from bench.orchestration.runner import Step

    out = smoke_run[0]
    logs = [line for p in (out / "results" / "cells").glob("*/*.log") for line in p.read_text().splitlines()]
    assert logs and not any(line.startswith("event: ") for line in logs)
    cell = next(c for c in load(REPO / "matrices" / "smoke.yaml").cells if c.bits == 4)
    events = []
    record = Launcher(tmp_path, data_dir, "smoke", echo=False, on_event=events.append)(Step(cell, "train"))
    assert record.status == "ok", record.log_tail
    steps = [e["done"] for e in events if e["cell"] == cell.id and e["phase"] == "train"]
    assert steps == list(range(21)) and {e["total"] for e in events} == {20}
    assert events[-1]["tokens_per_s"] > 0 and events[-1]["loss"] == record.metrics["train_loss_last"]
