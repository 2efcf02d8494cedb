"""The regression gate (`bench check`): literal RunRecords in a temporary store, no model anywhere."""

from __future__ import annotations

import json

import pytest
import yaml

from bench.__main__ import main
from bench.check import load_baseline
from bench.matrix import load
from bench.records import RunRecord, Status
from bench.store import Store

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


def fill(store: Store, cells: dict, trained_acc=0.8, loss=0.5, base_acc=0.6, skip=()) -> None:
    rows = {
        (TRAINED, "train"): {"metrics": {"train_loss_last": loss, "tokens_per_s": 100.0}},
        (TRAINED, "eval"): {"scores": scores(trained_acc, trained_acc - 0.05)},
        (BASE, "eval"): {"scores": scores(base_acc, base_acc - 0.1)},
    }
    for (cell_id, phase), fields in rows.items():
        if (cell_id, phase) not in skip:
            store.append(record(cells[cell_id], phase, **fields))


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


def test_run_goes_through_bench_run(setup, monkeypatch):
    import bench.__main__ as cli

    matrix, cells, store, baseline = setup
    fill(store, cells)
    gate(matrix, store, baseline, "--update")
    seen = []
    monkeypatch.setattr(cli, "cmd_run", lambda args: seen.append(args) or 0)
    assert gate(matrix, store, baseline, "--run", "--data-dir", "/data") == 0
    (args,) = seen
    assert (args.matrix, args.results_dir, args.data_dir, args.no_report) == (
        str(matrix), str(store.root), "/data", True
    )  # fmt: skip


def regressed(out: str) -> str:
    return "\n".join(line for line in out.splitlines() if line.endswith("REGRESSED"))


def dataclass_replace(record: RunRecord, **changes) -> RunRecord:
    from dataclasses import replace

    return replace(record, **changes)
