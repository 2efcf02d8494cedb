from pathlib import Path

import pytest

from bench.core.matrix import parse
from bench.core.records import RunRecord, Status
from bench.core.store import Store, latest
from bench.orchestration.runner import BusyError, Step, cell_status, exclusive_run, plan, run

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
    assert [(s.cell.is_base, s.phase) for s in steps] == [(False, "train"), (True, "eval"), (False, "eval")]


def test_steps_group_by_the_base_an_evaluation_loads():
    two = {
        "models": {"tiny": {"source": "tiny"}, "other": {"source": "tiny", "revision": "x"}},
        "axes": {"model": ["tiny", "other"], "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}],
                 "task": ["fpb", "ner"], "eval_bits": [8, 16]},
        "base": True,
    }  # fmt: skip
    steps = plan(parse(two, Path("m.yaml")).cells, [])
    bases = [(s.cell.model.name, s.cell.eval_bits) for s in steps]
    assert list(dict.fromkeys(bases)) == [("tiny", 8), ("tiny", 16), ("other", 8), ("other", 16)]
    for base in set(bases):  # each base's steps are contiguous
        at = [i for i, b in enumerate(bases) if b == base]
        assert at == list(range(at[0], at[0] + len(at)))
    first = [s for s in steps if (s.cell.model.name, s.cell.eval_bits) == ("tiny", 8)]
    phases = [("base" if s.cell.is_base else "adapter", s.phase) for s in first]
    assert phases == [("adapter", "train")] * 4 + [("base", "eval")] * 2 + [("adapter", "eval")] * 4


def test_run_hands_consecutive_evals_on_one_base_to_the_group_executor(tmp_path):
    matrix = {**MATRIX, "axes": {**MATRIX["axes"], "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}]}}
    store = Store(tmp_path)
    groups, lines = [], []

    def execute(step: Step) -> RunRecord:
        ok = step.cell.bits != 8  # the 8-bit training fails: its evaluation is skipped
        return record(step.cell, step.phase, Status.OK if ok else Status.FAILED)

    def execute_group(steps, emit) -> None:
        groups.append([(s.cell.config_label, s.phase) for s in steps])
        for s in steps:
            emit(record(s.cell, s.phase))

    run(plan(parse(matrix, Path("m.yaml")).cells, []), store, execute, lines.append, execute_group)
    assert groups == [[("base", "eval"), ("4bit-r4", "eval")]]
    assert [(r.cell_id.split("__")[2], r.phase) for r in store.records()] == [
        ("4bit-r4", "train"), ("8bit-r8", "train"), ("base", "eval"), ("4bit-r4", "eval"),
    ]  # fmt: skip
    assert any("8bit-r8" in line and "skipped (training did not succeed)" in line for line in lines)
    assert any("(and 1 more on one loaded base)" in line for line in lines)


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
    # Without a group executor every evaluation runs on its own.
    executed.clear()
    outcomes[("train", False)] = Status.OK
    outcomes[("eval", False)] = Status.OK
    run(plan(cells(), []), Store(tmp_path / "again"), execute, progress=lambda _: None)
    assert executed == [("train", False), ("eval", True), ("eval", False)]


def test_a_second_runner_on_the_same_results_dir_refuses(tmp_path):
    with exclusive_run(tmp_path):
        with pytest.raises(BusyError, match="another bench run"):
            with exclusive_run(tmp_path):
                pass
    with exclusive_run(tmp_path):  # released again
        pass


def test_run_exits_non_zero_when_any_step_is_not_ok_and_still_finishes(
    monkeypatch, tmp_path, data_dir, capsys
):
    """Through main(["run", ...]) with the workers stood in for: statuses come from them, the exit status
    from bench."""
    import yaml

    from bench.__main__ import main
    from bench.core.records import RunRecord, Status
    from bench.orchestration.launch import Launcher

    matrix = tmp_path / "m.yaml"
    matrix.write_text(yaml.safe_dump({
        "name": "exits", "models": {"tiny": {"source": "tiny"}},
        "axes": {"model": ["tiny"], "task": ["fpb"],
                 "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}]},
    }))  # fmt: skip
    outcome = {"4bit-r4": Status.OOM}

    def launch(self, step):
        status = outcome.get(step.cell.config_label, Status.OK)
        error = None if status == Status.OK else "simulated"
        cell = step.cell
        return RunRecord(cell.key, cell.id, cell.to_dict(), step.phase, status, "t0", "t1", 1.0, error=error)

    monkeypatch.setattr(Launcher, "__call__", launch)
    common = ["--results-dir", str(tmp_path / "r"), "--data-dir", str(data_dir), "--no-report"]
    assert main(["run", str(matrix), *common]) == 1
    out = capsys.readouterr().out
    assert "done: 3 records written, 1 not ok (1 oom)" in out  # the 8-bit cell still trained and evaluated
    outcome.clear()
    assert main(["run", str(matrix), *common, "--retry", "oom"]) == 0
    assert "done: 2 records written, 0 not ok" in capsys.readouterr().out


def test_leftover_workers_die_with_ranks_in_sessions_of_their_own(tmp_path):
    """As torchrun does: the recorded leader starts its rank in a new session. kill_leftovers must
    reach the rank too, not only the leader's process group."""
    import subprocess
    import sys
    import time

    from bench.orchestration.orphans import descendants, kill_leftovers, remember

    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
        "time.sleep(120)"
    )
    leader = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (ranks := descendants(leader.pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ranks, "the leader never started its rank"
        cell_dir = tmp_path / "cells" / "tiny__fpb-0123"
        cell_dir.mkdir(parents=True)
        remember(cell_dir / "train.pid", leader.pid)
        assert kill_leftovers(tmp_path) == [f"tiny__fpb-0123 train (pid {leader.pid})"]
        leader.wait(timeout=10)
        for _ in range(100):
            if not any(Path(f"/proc/{pid}").exists() and _running(pid) for pid in ranks):
                break
            time.sleep(0.1)
        assert not any(_running(pid) for pid in ranks), "the rank outlived its killed leader"
        assert not (cell_dir / "train.pid").exists()
    finally:
        if leader.poll() is None:
            leader.kill()


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_the_console_line_shows_the_cells_own_scorer(tmp_path):
    """A cell scored strict shows its strict accuracy, as its report does, not the finlora one."""
    from dataclasses import replace

    from bench.core.records import Phase
    from bench.orchestration.runner import summary

    raw = {"name": "m", "models": {"t": {"source": "tiny"}},
           "axes": {"model": ["t"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
           "eval": {"scorer": "strict"}}  # fmt: skip
    (cell,) = [c for c in parse(raw, tmp_path / "m.yaml").cells]
    scores = [{"task": "fpb", "scorer": "finlora", "accuracy": 0.433},
              {"task": "fpb", "scorer": "strict", "accuracy": 0.267}]  # fmt: skip
    record = replace(RunRecord(cell.key, cell.id, cell.to_dict(), Phase.EVAL, Status.OK, "t0", "t1", 2.0),
                     scores=scores)  # fmt: skip
    assert summary(record) == "ok in 2s, fpb acc 0.267 (strict)"
