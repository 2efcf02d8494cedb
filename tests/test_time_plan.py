"""The time planner (bench.planning.timing, .calibration, .time_plan): FLOPs of a cell's phases from the
task data, an MFU calibrated from records built here on a device class, the peak, the arithmetic of
seconds and GPU-hours, `bench plan`'s totals and the resources table's predicted vs measured pair."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from bench.core.architecture import Shape
from bench.core.cell import Cell, EvalConfig, ModelSpec, TrainConfig
from bench.core.data import load_splits
from bench.core.flops import LoraStep
from bench.core.matrix import load
from bench.core.metrics import RESOURCES, shown_in
from bench.core.records import Phase, RunRecord, Status
from bench.planning import calibration
from bench.planning.calibration import DEFAULT_MFU, Target, cached_cpu_peak, calibrated_mfu, target_peak
from bench.planning.time_plan import Total, cell_text, predictions, total_lines
from bench.planning.timing import (
    Lengths,
    eval_flops,
    forward_per_token,
    lengths,
    predict_times,
    train_flops,
)
from bench.report.model import CellState
from bench.report.tables import resources_table

REPO = Path(__file__).resolve().parents[1]
H100 = "NVIDIA H100 80GB HBM3"
ARCH = Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=100, tied=True)
TINY = ModelSpec("tiny", source="tiny")


def cell(max_steps=None, gpus=1, bits=4, limit=None, train_limit=None, task="fpb") -> Cell:
    train = TrainConfig(batch_per_gpu=4, max_steps=max_steps, epochs=2.0, train_limit=train_limit)
    return Cell(TINY, task, bits, 4, gpus, 8, train, EvalConfig(limit=limit))


def record(c: Cell, phase: str, device: str, model: str = "tiny", **metrics) -> RunRecord:
    data = {**c.to_dict(), "model": {**c.to_dict()["model"], "name": model}}
    return RunRecord(
        cell_key=c.key, cell_id=c.id, cell=data, phase=phase, status=Status.OK,
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0,
        metrics={"device": device, "devices": [device], **metrics},
    )  # fmt: skip


def test_training_flops_are_the_workers_steps_times_a_row_at_the_mean_length():
    length = Lengths(prompt=30.0, target=2.0, basis="")
    step = LoraStep(ARCH, 4, ("q_proj", "k_proj", "v_proj"))
    per_row = step.batch([33.0], 3.0).total  # prompt + target + EOS; loss at the target and EOS
    # 100 rows, batch 4 on 1 GPU, 2 epochs: ceil(2 x 25) = 50 steps of 4 rows
    assert train_flops(cell(), ARCH, 100, length) == pytest.approx(50 * 4 * per_row)
    assert train_flops(cell(max_steps=7), ARCH, 100, length) == pytest.approx(7 * 4 * per_row)
    assert train_flops(cell(train_limit=40), ARCH, 100, length) == pytest.approx(20 * 4 * per_row)
    # 2 GPUs: 100 // 4 // 2 = 12 batches a rank, 24 steps of 8 rows (the worker drops the remainder)
    assert train_flops(cell(gpus=2), ARCH, 100, length) == pytest.approx(24 * 8 * per_row)


def test_evaluation_flops_are_the_prompt_forward_then_each_generated_token():
    linear = 2 * 2 * (64 * 64 + 64 * 32 * 2 + 64 * 64 + 3 * 64 * 128)  # 2 layers of q, k, v, o, mlp
    assert forward_per_token(ARCH) == linear
    head, width = 2 * 64 * 100, 64
    prefill = 10 * linear + 4 * width * 100 * 2 + head
    decode = 3 * (linear + head + 4 * width * (10 + 1.5) * 2)
    assert eval_flops(ARCH, 10, 3) == pytest.approx(prefill + decode)


def test_mfu_is_the_median_of_the_same_model_and_bits_on_the_class_then_wider_then_a_default():
    c, gpu = cell(), Target(H100)
    records = [
        record(c, Phase.TRAIN, H100, mfu=0.2, precision="bf16"),
        record(c, Phase.TRAIN, H100, mfu=0.4, precision="bf16"),
        record(c, Phase.TRAIN, H100, mfu=0.3, precision="bf16"),
        record(c, Phase.TRAIN, H100, model="other", mfu=0.9, precision="bf16"),
        record(c, Phase.TRAIN, "NVIDIA A100-SXM4-80GB", mfu=0.7, precision="bf16"),  # another class
        record(c, Phase.TRAIN, H100, mfu=0.8, precision="fp32"),  # another precision
    ]
    mfu = calibrated_mfu(records, gpu, Phase.TRAIN, "bf16", "tiny", 4, lambda r: r.metrics["mfu"])
    assert mfu.value == pytest.approx(0.3) and mfu.calibrated
    assert mfu.basis == f"median of 3 records (this model) on {H100} bf16"
    other = calibrated_mfu(records, gpu, Phase.TRAIN, "bf16", "llama", 4, lambda r: r.metrics["mfu"])
    assert other.value == pytest.approx(0.35) and "4 records (any model)" in other.basis
    eight = calibrated_mfu(records, gpu, Phase.TRAIN, "bf16", "tiny", 8, lambda r: r.metrics["mfu"])
    assert eight.value == pytest.approx(0.35) and "4 records (any model, any bits)" in eight.basis
    slow = [*records, record(cell(bits=8), Phase.TRAIN, H100, mfu=0.01, precision="bf16")]
    eight = calibrated_mfu(slow, gpu, Phase.TRAIN, "bf16", "tiny", 8, lambda r: r.metrics["mfu"])
    assert eight.value == pytest.approx(0.01) and "1 record (this model)" in eight.basis
    l4 = Target("NVIDIA L4")
    none = calibrated_mfu(records, l4, Phase.TRAIN, "bf16", "tiny", 4, lambda r: r.metrics["mfu"])
    assert not none.calibrated and none.value == DEFAULT_MFU[(Phase.TRAIN, "gpu")]
    assert none.basis.startswith("default 5%: no train records on NVIDIA L4 bf16")


def test_peaks_come_from_the_gpu_table_cpu_records_or_the_probe_cache(tmp_path, monkeypatch):
    assert target_peak(Target(H100), "bf16", []).flops_per_s == pytest.approx(989.4e12)
    cpu, c = Target("cpu"), cell()
    records = [record(c, Phase.TRAIN, "cpu", peak_flops_per_s=4e10, precision="fp32"),
               record(c, Phase.TRAIN, "cpu", peak_flops_per_s=6e10, precision="fp32")]  # fmt: skip
    assert target_peak(cpu, "fp32", records).flops_per_s == pytest.approx(5e10)
    monkeypatch.setattr(calibration, "_cpu_model", lambda: "Some CPU")
    assert cached_cpu_peak("fp32", tmp_path).flops_per_s is None
    (tmp_path / "cpu-fp32-2t-abc.json").write_text(json.dumps({"key": {"cpu_model": "Some CPU"},
                                                               "flops_per_s": 1.9e11}))  # fmt: skip
    (tmp_path / "cpu-fp32-2t-def.json").write_text(json.dumps({"key": {"cpu_model": "Other"},
                                                               "flops_per_s": 9e11}))  # fmt: skip
    assert cached_cpu_peak("fp32", tmp_path).flops_per_s == pytest.approx(1.9e11)


def test_seconds_are_flops_over_mfu_times_peak_times_gpus_and_gpu_hours_times_gpus(data_dir):
    two = cell(max_steps=10, gpus=2)
    records = [record(two, Phase.TRAIN, H100, mfu=0.25, precision="bf16")]
    predicted = predict_times(two, data_dir, records, Target(H100))
    train = predicted.train
    assert train.seconds == pytest.approx(train.flops / (0.25 * 989.4e12 * 2))
    assert train.gpu_hours == pytest.approx(train.seconds * 2 / 3600)
    assert "MFU 25% (median of 1 record (this model)" in train.basis and "assumed" in train.basis
    evaluation = predicted.eval  # the default eval MFU: no eval records; one device computes at a time
    assert evaluation.seconds == pytest.approx(evaluation.flops / (0.01 * 989.4e12))
    assert evaluation.gpu_hours == pytest.approx(evaluation.seconds * two.gpus_per_node / 3600)
    assert "default 1%" in evaluation.basis
    assert predicted.to_metrics(Phase.TRAIN) == {"predicted_train_s": round(train.seconds, 1),
                                                 "predicted_time_basis": train.basis}  # fmt: skip


def test_rows_lengths_are_measured_where_a_record_of_the_model_and_task_has_them(data_dir):
    c = cell(max_steps=10)
    train = load_splits("fpb", data_dir).train
    chars = sum(len(r["context"]) + len(r["target"]) for r in train) / len(train)
    assumed = lengths(c, train, [], chars)
    assert assumed.prompt + assumed.target == pytest.approx(chars / 4)
    measured = record(c, Phase.TRAIN, "cpu", tokens_per_s=500.0, examples_per_s=10.0)  # 50 tokens a row
    found = lengths(c, train, [measured], chars)
    assert found.prompt + found.target == pytest.approx(49.0) and "measured" in found.basis


def test_a_cell_without_a_model_config_or_data_has_no_prediction_and_says_why():
    hub = Cell(ModelSpec("llama", source="someone/unknown-model"), "fpb", 4, 4, 1, 8,
               TrainConfig(max_steps=5), EvalConfig())  # fmt: skip
    p = predict_times(hub, None, [], Target("cpu"))
    assert p.train.seconds is None and p.train.basis.startswith("no prediction")
    assert cell_text(p) == "train ?, eval ?"


def test_cpu_targets_have_no_gpu_hours_and_totals_add_the_steps_to_run(data_dir, monkeypatch):
    c = cell(max_steps=10)
    records = [record(c, Phase.TRAIN, "cpu", mfu=0.5, peak_flops_per_s=1e11, precision="fp32")]
    times = predictions([c], data_dir, records, Target("cpu"))
    p = times[c.key]
    assert p.train.gpu_hours is None and p.train.seconds == pytest.approx(p.train.flops / (0.5 * 1e11))
    step = type("Step", (), {})
    steps = [step(), step()]
    steps[0].cell, steps[0].phase, steps[1].cell, steps[1].phase = c, Phase.TRAIN, c, Phase.EVAL
    lines = total_lines(steps, times, Target("cpu"))
    total = Total().add(p.train).add(p.eval)
    assert total.seconds == pytest.approx(p.train.seconds + p.eval.seconds)
    assert lines[0].startswith("predicted total on cpu: ") and "(CPU: no GPU-hours) for 2 steps" in lines[0]
    assert any("train: MFU 50% (median of 1 record" in line for line in lines[1:])


def test_resources_table_shows_predicted_beside_measured_time():
    keys = [m.key for m in shown_in(RESOURCES)]
    assert keys.index("predicted_train_s") == keys.index("train_s") + 1
    assert keys.index("predicted_eval_s") == keys.index("eval_s") + 1
    c = cell(max_steps=10)
    train = record(c, Phase.TRAIN, "cpu", train_s=100.0, predicted_train_s=80.0, predicted_time_basis="B")
    evaluation = record(c, Phase.EVAL, "cpu", eval_s=30.0, predicted_eval_s=45.0, predicted_time_basis="B")
    table = resources_table([CellState(c, train, evaluation)])
    heads = [col.heading for col in table.columns]
    shown = {head: entry.text for head, entry in zip(heads, table.rows[0], strict=True)}
    assert shown["Train time"] == "100.0 s" and shown["Predicted train time"] == "80.0 s"
    assert shown["Eval time"] == "30.0 s" and shown["Predicted eval time"] == "45.0 s"
    assert any(note.startswith("Predicted: B (2 records)") for note in table.notes)


def test_plan_prints_each_cells_time_and_the_matrix_total(tmp_path, data_dir):
    env = {**os.environ, "BENCH_DATA": str(data_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "bench", "plan", "matrices/smoke.yaml", "--results-dir", str(tmp_path),
         "--device", H100], capture_output=True, text=True, env=env, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    matrix = load(REPO / "matrices" / "smoke.yaml")
    assert out.stdout.count("GPU-h)") >= len([c for c in matrix.cells if not c.is_base])
    total = next(line for line in out.stdout.splitlines() if line.startswith("predicted total on"))
    assert total.startswith(f"predicted total on {H100}: ") and "GPU-hours for" in total
    assert "default 5%: no train records on" in out.stdout  # said so: nothing calibrated it
    assert math.isfinite(float(total.split(", ")[1].split()[0]))


def test_an_evaluation_records_mfu_is_its_examples_flops_over_its_time_and_the_peak(data_dir):
    from bench.core.architecture import shape
    from bench.planning.planner import architecture
    from bench.planning.timing import eval_examples, mean_chars, record_mfu, train_rows

    c = cell(limit=48)
    done = replace(record(c, Phase.EVAL, "cpu", eval_s=12.0, examples=48),
                   data=[{"task": "fpb", "test_file": str(data_dir / "fpb" / "test.jsonl")}])  # fmt: skip
    _, test = eval_examples(c, data_dir)
    length = lengths(c, test, [], sum(mean_chars(train_rows(c, data_dir))))
    flops = 48 * eval_flops(shape(architecture(c.model)), length.prompt, length.target + 1)
    assert record_mfu(done, 1e11, []) == pytest.approx(flops / 12.0 / 1e11)
    records = [done, record(c, Phase.TRAIN, "cpu", mfu=0.5, peak_flops_per_s=1e11, precision="fp32")]
    evaluation = predict_times(c, data_dir, records, Target("cpu")).eval
    assert "median of 1 record (this model) on cpu fp32" in evaluation.basis
    assert evaluation.seconds == pytest.approx(12.0)  # the same evaluation, calibrated on itself


def test_base_rows_calibrate_evaluation_and_a_forecast_never_costs_a_record(data_dir, tmp_path, monkeypatch):
    """A base row's eval record (no training config) calibrates the next evaluation (reading it once
    raised in the launcher and lost a run's records); whatever a forecast raises, the record keeps its
    measurement and says why there is no prediction."""
    from bench.planning import timing

    base = Cell(TINY, "fpb", None, None, 1, 8, None, EvalConfig(limit=48))
    test_file = str(data_dir / "fpb" / "test.jsonl")
    done = replace(record(base, Phase.EVAL, "cpu", eval_s=12.0, examples=48),
                   data=[{"task": "fpb", "test_file": test_file}])  # fmt: skip
    peak = record(cell(), Phase.TRAIN, "cpu", mfu=0.5, peak_flops_per_s=1e11, precision="fp32")
    adapter = cell(limit=48)
    evaluation = predict_times(adapter, data_dir, [done, peak], Target("cpu")).eval
    assert "median of 1 record (this model) on cpu fp32" in evaluation.basis and evaluation.seconds

    def broken(*args):
        raise RuntimeError("a record nobody foresaw")

    monkeypatch.setattr(timing, "predict_times", broken)
    step = type("Step", (), {"cell": adapter, "phase": Phase.EVAL})()
    metrics = timing.timed_metrics(step, {"device": "cpu"}, tmp_path, data_dir)
    why = "no prediction: RuntimeError: a record nobody foresaw"
    assert metrics == {"predicted_eval_s": None, "predicted_time_basis": why}
    assert cell_text(predictions([adapter], data_dir, [], Target("cpu"))[adapter.key]) == "train ?, eval ?"
