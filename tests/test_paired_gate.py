"""bench check's paired gate: fine-tuned minus base (and minus a constant majority answer) on the same
rows, 95% lower bound above 0 (bench.gate.paired_gate), from records and samples files written by hand.
The speed check is off here (speed=False, as --no-speed): tests/test_check.py covers it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.core.matrix import parse
from bench.core.records import RunRecord, Status
from bench.core.samples import SampleReader
from bench.core.scoring import score
from bench.gate.check import CheckError, gate

N = 90
GOLD = ["neutral"] * 50 + ["positive"] * 25 + ["negative"] * 15  # neutral is the majority: 50 of 90
MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"], "eval_bits": [16]},
    "base": True,
    "train": {"max_steps": 4},
    "eval": {"limit": N, "scorer": "strict"},
}


def store(root: Path, tuned: list[str], base: list[str]):
    matrix = parse(MATRIX, Path("m.yaml"))
    records = []
    for cell in matrix.cells:
        outs = base if cell.is_base else tuned
        folder = root / "cells" / cell.dirname
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / "samples_fpb.jsonl", "w") as fh:
            for i, (out, gold) in enumerate(zip(outs, GOLD, strict=True)):
                fh.write(json.dumps({"doc_id": i, "output": out, "raw": out, "target": gold}) + "\n")
        point = score("fpb", outs, GOLD, "strict")
        common = {"cell_key": cell.key, "cell_id": cell.id, "cell": cell.to_dict(), "status": Status.OK,
                  "started_at": "2026-11-29T10:00:00+00:00", "finished_at": "2026-11-29T10:01:00+00:00",
                  "wall_s": 1.0, "env": {"host": "h"}}  # fmt: skip
        if not cell.is_base:
            records.append(RunRecord(phase="train", metrics={"train_loss_last": 0.5, "tokens_per_s": 10.0},
                                     **common))  # fmt: skip
        scores = [{"task": "fpb", "scorer": "strict", "n": N, "accuracy": point["accuracy"],
                   "weighted_f1": point["weighted_f1"]}]  # fmt: skip
        artifacts = {"samples_fpb": f"cells/{cell.dirname}/samples_fpb.jsonl"}
        records.append(RunRecord(phase="eval", scores=scores, artifacts=artifacts, **common))
    return matrix, records


def run_gate(tmp_path: Path, tuned: list[str], base: list[str], paired=("accuracy",)) -> tuple[int, str]:
    matrix, records = store(tmp_path, tuned, base)
    path = tmp_path / "baseline.json"
    assert gate(matrix.cells, "m", records, path, update=True, speed=False)[0] == 0
    data = json.loads(path.read_text())
    if paired is not None:
        data["paired_gate"] = list(paired)
    path.write_text(json.dumps(data))
    return gate(matrix.cells, "m", records, path, update=False, samples=SampleReader(tmp_path), speed=False)


GOOD = list(GOLD[:80]) + ["neutral"] * 10  # right on 80 + 0 of the last 10 (positive/negative rows)


def test_an_adapter_that_learned_passes(tmp_path):
    status, text = run_gate(tmp_path, GOOD, ["I think so"] * N)
    assert status == 0, text
    assert "fpb/strict/accuracy − base" in text and "fpb/strict/accuracy − majority class" in text


def test_a_constant_majority_adapter_cannot_pass_even_against_a_weak_base(tmp_path):
    # The base writes free text the strict scorer cannot read (0% accuracy); answering "neutral" always
    # scores 50/90 = 56% and beats it by far, but it is no better than the constant answer it is.
    status, text = run_gate(tmp_path, ["neutral"] * N, ["I think so"] * N)
    assert status == 1
    lines = [line for line in text.splitlines() if "majority class" in line]
    assert lines and "NOT BETTER" in lines[0] and "Δ +0.0000 [+0.0000, +0.0000]" in lines[0]
    assert any("− base" in line and line.rstrip().endswith("ok") for line in text.splitlines())


def test_an_adapter_no_better_than_its_base_fails(tmp_path):
    status, text = run_gate(tmp_path, GOOD, GOOD, paired=("accuracy", "weighted_f1"))
    assert status == 1
    failed = [line for line in text.splitlines() if "− base" in line]
    assert len(failed) == 2 and all("NOT BETTER" in line for line in failed)


def test_without_the_key_the_gate_is_as_before_and_a_bad_key_is_named(tmp_path):
    status, text = run_gate(tmp_path, ["neutral"] * N, ["I think so"] * N, paired=None)
    assert status == 0 and "paired" not in text and "majority" not in text
    with pytest.raises(CheckError, match="'paired_gate' must be a list of accuracy, weighted_f1"):
        run_gate(tmp_path / "x", GOOD, GOOD, paired=("acc",))


def test_missing_samples_are_a_failure_not_a_pass(tmp_path):
    matrix, records = store(tmp_path, GOOD, ["I think so"] * N)
    path = tmp_path / "baseline.json"
    gate(matrix.cells, "m", records, path, update=True, speed=False)
    path.write_text(json.dumps({**json.loads(path.read_text()), "paired_gate": ["accuracy"]}))
    status, text = gate(matrix.cells, "m", records, path, update=False, speed=False)  # no samples reader
    assert status == 1 and "samples not read" in text and "MISSING" in text
