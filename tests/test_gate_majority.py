"""The gate fails an adapter that always answers the majority class: its samples are written by the real
evaluation path (bench.workers.evaluate.evaluate_cell: lm-eval on the real FPB test rows, the samples
file, the scores) with a constant language model in place of the network, and the gate reads them as
`bench check` does (SampleReader, the baseline's "paired_gate")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.core.matrix import load
from bench.core.records import RunRecord, Status
from bench.core.samples import SampleReader
from bench.gate.check import gate

LIMIT = 60
MATRIX = {
    "name": "majority",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"], "eval_bits": [16]},
    "base": True,
    "train": {"max_steps": 4},
    "eval": {"limit": LIMIT, "scorer": "strict"},
}


def constant_lm(answer_for):
    """An lm-eval model class that answers every generation request with answer_for(prompt)."""
    from lm_eval.api.model import LM

    class Constant(LM):
        def __init__(self, *args, **kwargs):
            super().__init__()
            self.prefix_reuse, self.shared_spans = False, []  # what evaluate_cell reads of BenchLM

        def generate_until(self, requests, disable_tqdm: bool = False):
            return [answer_for(request.args[0]) for request in requests]

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            raise NotImplementedError("FPB is a generation task")

        loglikelihood_rolling = loglikelihood

    return Constant


def evaluated(cell, root: Path, data_dir: Path, answer_for, monkeypatch) -> RunRecord:
    """The cell's eval record as the launcher makes it from evaluate_cell's outcome."""
    import bench.workers.lm
    from bench.workers.evaluate import evaluate_cell

    monkeypatch.setattr(bench.workers.lm, "BenchLM", constant_lm(answer_for))
    cell_dir = root / "cells" / cell.dirname
    cell_dir.mkdir(parents=True)
    reused = {"base_load_s": 0.0, "base_shared_by": 2, "base_reused": False}
    outcome = evaluate_cell(cell, cell_dir, data_dir, object(), None, 0.0, reused).to_dict()
    artifacts = {k: str(Path(v).relative_to(root)) for k, v in outcome["artifacts"].items()}
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase="eval", status=Status.OK,
        started_at="2026-11-30T00:00:00+00:00", finished_at="2026-11-30T00:01:00+00:00", wall_s=60.0,
        metrics=outcome["metrics"], scores=outcome["scores"], artifacts=artifacts, env={"host": "h"},
    )  # fmt: skip


@pytest.fixture
def cells(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(MATRIX))
    matrix = load(path)
    return (
        matrix.cells,
        next(c for c in matrix.cells if not c.is_base),
        next(c for c in matrix.cells if c.is_base),
    )


def check(cells, records, root: Path) -> tuple[int, str]:
    path = root / "baseline.json"
    assert gate(cells, "majority", records, path, update=True, speed=False)[0] == 0
    path.write_text(json.dumps({**json.loads(path.read_text()), "paired_gate": ["accuracy"]}))
    return gate(cells, "majority", records, path, update=False, samples=SampleReader(root), speed=False)


def test_an_always_majority_adapter_fails_the_paired_gate(cells, tmp_path, data_dir, monkeypatch):
    all_cells, tuned, base = cells
    train = RunRecord(
        cell_key=tuned.key, cell_id=tuned.id, cell=tuned.to_dict(), phase="train", status=Status.OK,
        started_at="2026-11-30T00:00:00+00:00", finished_at="2026-11-30T00:01:00+00:00", wall_s=60.0,
        metrics={"train_loss_last": 0.4}, env={"host": "h"},
    )  # fmt: skip
    constant = evaluated(tuned, tmp_path, data_dir, lambda prompt: "neutral", monkeypatch)
    weak = evaluated(base, tmp_path, data_dir, lambda prompt: "I am not sure.", monkeypatch)
    samples = [
        json.loads(line) for line in (tmp_path / constant.artifacts["samples_fpb"]).read_text().splitlines()
    ]
    assert len(samples) == LIMIT and {s["output"] for s in samples} == {"neutral"}
    golds = [s["target"] for s in samples]
    assert max(set(golds), key=golds.count) == "neutral"  # the constant answer is the majority class
    status, text = check(all_cells, [train, constant, weak], tmp_path)
    assert status == 1, text
    majority = next(line for line in text.splitlines() if "accuracy − majority class" in line)
    assert majority.endswith("NOT BETTER") and "Δ +0.0000" in majority
    against_base = next(line for line in text.splitlines() if "accuracy − base" in line)
    assert against_base.endswith("ok")  # it does beat a base that answers nothing readable
