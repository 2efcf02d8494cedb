from pathlib import Path

import pytest

from bench.matrix import parse
from bench.records import RunRecord, Status
from bench.runner import BusyError, Step, cell_status, exclusive_run, plan, run
from bench.store import Store, latest

MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
}


def cells():
    return parse(MATRIX, Path("m.yaml")).cells


def record(cell, phase, status=Status.OK):
    return RunRecord(cell.key, cell.id, cell.to_dict(), phase, status, "t0", "t1", 1.0)


def test_fresh_matrix_plans_train_then_eval_and_base_eval_only():
    steps = plan(cells(), [])
    assert [(s.cell.is_base, s.phase) for s in steps] == [(False, "train"), (False, "eval"), (True, "eval")]


def test_resume_skips_done_phases_and_a_complete_store_plans_nothing():
    trained, base = cells()
    assert [s.phase for s in plan([trained], [record(trained, "train")])] == ["eval"]
    done = [record(trained, "train"), record(trained, "eval"), record(base, "eval")]
    assert plan(cells(), done) == []
    assert cell_status(trained, latest(done)) == "done"


def test_failures_are_results_until_retried_on_purpose():
    trained, base = cells()
    records = [record(trained, "train", Status.OOM), record(base, "eval", Status.FAILED)]
    assert plan(cells(), records) == []
    assert cell_status(trained, latest(records)) == "oom"
    retried = plan(cells(), records, retry=frozenset({Status.OOM}))
    assert [(s.cell.is_base, s.phase) for s in retried] == [(False, "train"), (False, "eval")]
    assert len(plan(cells(), records, rerun=True)) == 3


def test_a_newer_record_supersedes_an_older_one():
    trained, _ = cells()
    records = [record(trained, "train", Status.FAILED), record(trained, "train")]
    assert cell_status(trained, latest(records)) == "partial"


def test_run_appends_each_outcome_and_skips_eval_after_failed_training(tmp_path):
    trained, base = cells()
    store = Store(tmp_path)
    outcomes = {("train", False): Status.FAILED, ("eval", True): Status.OK}
    executed = []

    def execute(step: Step) -> RunRecord:
        executed.append((step.phase, step.cell.is_base))
        return record(step.cell, step.phase, outcomes[(step.phase, step.cell.is_base)])

    run(plan(cells(), []), store, execute, progress=lambda _: None)
    assert executed == [("train", False), ("eval", True)]
    assert [(r.phase, r.status) for r in store.records()] == [("train", Status.FAILED), ("eval", Status.OK)]


def test_a_second_runner_on_the_same_results_dir_refuses(tmp_path):
    with exclusive_run(tmp_path):
        with pytest.raises(BusyError, match="another bench run"):
            with exclusive_run(tmp_path):
                pass
    with exclusive_run(tmp_path):  # released again
        pass
