"""The local executor: runs what the scheduler (bench.orchestration.scheduler) plans, one worker at a time,
and the one place records are appended (Recorder), for the Ray executor too.

run() executes the plan in order; consecutive evaluations on one base go to one worker. `session` is what
every executor holds while it runs: the results directory's lock, the stop request (SIGTERM, Ctrl-C) and
the clean-up of workers an interrupted run left.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path

from bench.core.records import Phase, RunRecord, Status
from bench.core.store import Store, latest
from bench.orchestration.orphans import kill_leftovers
from bench.orchestration.preemption import STOP
from bench.orchestration.scheduler import (  # noqa: F401  (cell_status, plan, base_of: read from here too)
    RESUMABLE,
    Step,
    base_of,
    cell_status,
    eval_groups,
    plan,
    ready_evaluations,
)


class BusyError(Exception):
    pass


class Recorder:
    """Appends each record to the store as it comes (the one place records are written), keeps the newest
    per (cell, phase) for readiness, and tells the console."""

    def __init__(self, store: Store, progress: Callable[[str], None], on_record=None):
        self.store, self.progress, self.on_record = store, progress, on_record
        self.written: list[RunRecord] = []
        self.last: dict = latest(store.records())  # read once, then kept up to date

    def __call__(self, record: RunRecord, label: str, after: str = "") -> None:
        self.store.append(record)
        self.written.append(record)
        self.last[(record.cell_key, record.phase)] = record
        self.progress(f"{label}: {summary(record)}{after}")
        if self.on_record is not None:
            self.on_record(record)


@contextmanager
def session(store: Store, progress: Callable[[str], None], stoppable: bool = True) -> Iterator[None]:
    """One runner per results directory, a stop request that ends it cleanly (`stoppable`; the Ray driver
    enters the stop request itself, after ray.init has set its own SIGTERM handler), no leftover workers."""
    with exclusive_run(store.root), STOP if stoppable else nullcontext():
        for leftover in kill_leftovers(store.root):  # only now: holding the lock, no other runner lives
            progress(f"killed a worker left by an interrupted run: {leftover}")
        yield


GroupExecutor = Callable[[Sequence[Step], Callable[[RunRecord], None]], None]


def run(
    steps: list[Step],
    store: Store,
    execute: Callable[[Step], RunRecord],
    progress: Callable[[str], None] = print,
    execute_group: GroupExecutor | None = None,
    on_record: Callable[[RunRecord], None] | None = None,
) -> list[RunRecord]:
    """Execute steps in order, appending each outcome as it comes. An eval whose training did not
    succeed is skipped. Consecutive evals on one base go to `execute_group` together, if given: it
    calls back once per cell, as soon as that cell's record exists. `on_record` sees each record
    after it is stored (bench.orchestration.console's matrix bar). A stop request ends the run after
    the step it reached."""
    number = {id(step): i for i, step in enumerate(steps, start=1)}

    def tag(step: Step) -> str:
        return f"[{number[id(step)]}/{len(steps)}] {step.phase:<5} {step.cell.id}"

    with session(store, progress):
        record = Recorder(store, progress, on_record)
        groups = eval_groups(steps)
        for at, group in enumerate(groups):
            if STOP.requested:
                left = sum(len(g) for g in groups[at:])
                progress(f"stopped on request: {left} steps left for the next run")
                break
            if group[0].phase != Phase.EVAL:  # trainings and the gate's speed runs: one step, one worker
                progress(tag(group[0]))
                record(execute(group[0]), tag(group[0]))
                continue
            ready, skipped = ready_evaluations(group, record.last)
            for each in skipped:
                progress(f"{tag(each)}: skipped (training did not succeed)")
            if execute_group is not None and len(ready) > 1:
                progress(f"{tag(ready[0])} (and {len(ready) - 1} more on one loaded base)")
                by_key = {s.cell.key: s for s in ready}
                execute_group(ready, lambda r, by_key=by_key: record(r, tag(by_key[r.cell_key])))
                continue
            for each in ready:
                if STOP.requested:
                    break
                progress(tag(each))
                record(execute(each), tag(each))
    return record.written


def summary(record: RunRecord) -> str:
    text = f"{record.status} in {record.wall_s:.0f}s"
    m = record.metrics
    if record.status != Status.OK:
        return f"{text}: {(record.error or '').splitlines()[-1] if record.error else 'see log'}"
    if record.phase in (Phase.TRAIN, Phase.PLAIN, Phase.SPEED):
        return f"{text}, loss {m.get('train_loss_first', 0):.3f} -> {m.get('train_loss_last', 0):.3f}, " + (
            f"{m.get('tokens_per_s', 0):.0f} tokens/s"
        )
    scorer = (record.cell.get("eval") or {}).get("scorer", "finlora")  # the cell's primary, as the report's
    parts = [f"{s['task']} acc {s['accuracy']:.3f}" for s in record.scores if s.get("scorer") == scorer]
    return f"{text}, " + ", ".join(parts) + f" ({scorer})"


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
