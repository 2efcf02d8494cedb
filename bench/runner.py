"""plan(): which (cell, phase) steps a matrix still needs (pure). run(): the one loop with side effects."""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.cell import Cell
from bench.orphans import kill_leftovers
from bench.records import RunRecord, Status
from bench.store import Store, is_ok, latest


class BusyError(Exception):
    pass


@dataclass(frozen=True)
class Step:
    cell: Cell
    phase: str  # train | eval


def cell_status(cell: Cell, records: dict) -> str:
    """new | done | partial | <status of the phase that did not succeed> (oom, failed, timeout)."""
    phase_records = [records.get((cell.key, phase)) for phase in cell.phases()]
    for record in phase_records:
        if record is not None and record.status != Status.OK:
            return str(record.status)
    if all(is_ok(r) for r in phase_records):
        return "done"
    return "partial" if any(phase_records) else "new"


def plan(
    cells: Iterable[Cell],
    records: Iterable[RunRecord],
    retry: frozenset[Status] = frozenset(),
    rerun: bool = False,
) -> list[Step]:
    """Resume = skip what the store holds. A failed phase is a result unless `retry` names its status."""
    last = latest(records)
    steps: list[Step] = []
    for cell in cells:
        if not cell.is_base:
            train = last.get((cell.key, "train"))
            if rerun or train is None or train.status in retry:
                steps += [Step(cell, "train"), Step(cell, "eval")]
                continue
            if train.status != Status.OK:
                continue
        evaluated = last.get((cell.key, "eval"))
        if rerun or evaluated is None or evaluated.status in retry:
            steps.append(Step(cell, "eval"))
    return steps


def run(
    steps: list[Step],
    store: Store,
    execute: Callable[[Step], RunRecord],
    progress: Callable[[str], None] = print,
) -> list[RunRecord]:
    """Execute steps in order, appending each outcome. An eval whose training did not succeed is skipped."""
    written: list[RunRecord] = []
    with exclusive_run(store.root):
        for leftover in kill_leftovers(store.root):  # only now: holding the lock, no other runner lives
            progress(f"killed a worker left by an interrupted run: {leftover}")
        for index, step in enumerate(steps, start=1):
            if step.phase == "eval" and not step.cell.is_base:
                trained = latest(store.records()).get((step.cell.key, "train"))
                if not is_ok(trained):
                    progress(
                        f"[{index}/{len(steps)}] eval  {step.cell.id}: skipped (training did not succeed)"
                    )
                    continue
            progress(f"[{index}/{len(steps)}] {step.phase:<5} {step.cell.id}")
            record = execute(step)
            store.append(record)
            written.append(record)
            progress(f"[{index}/{len(steps)}] {step.phase:<5} {step.cell.id}: {summary(record)}")
    return written


def summary(record: RunRecord) -> str:
    text = f"{record.status} in {record.wall_s:.0f}s"
    m = record.metrics
    if record.status != Status.OK:
        return f"{text}: {(record.error or '').splitlines()[-1] if record.error else 'see log'}"
    if record.phase == "train":
        return f"{text}, loss {m.get('train_loss_first', 0):.3f} -> {m.get('train_loss_last', 0):.3f}, " + (
            f"{m.get('tokens_per_s', 0):.0f} tokens/s"
        )
    parts = [f"{s['task']} acc {s['accuracy']:.3f}" for s in record.scores if s.get("scorer") == "finlora"]
    return f"{text}, " + ", ".join(parts)


class exclusive_run:
    """One runner per results directory: a second one refuses instead of interleaving work."""

    def __init__(self, root: Path):
        self.path = Path(root) / ".run.lock"

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "w")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self.fh.close()
            raise BusyError(
                f"another bench run holds {self.path}; wait for it to finish or use another --results-dir"
            ) from exc
        return self

    def __exit__(self, *exc):
        fcntl.flock(self.fh, fcntl.LOCK_UN)
        self.fh.close()
