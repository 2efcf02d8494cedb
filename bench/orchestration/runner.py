"""plan(): which (cell, phase) steps a matrix still needs (pure). run(): the one loop with side effects.

Steps come in groups that share a base model (model, eval_bits, GPUs): the group's trainings first,
then its evaluations, so that one evaluation worker can load the base once and go through every
adapter of the group (and the base row) on it instead of reloading the base per cell.
"""

from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.core.cell import Cell
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import Store, is_ok, latest
from bench.orchestration.orphans import kill_leftovers
from bench.orchestration.preemption import STOP

# A step stopped on request (a preemption) is not a result: the next run takes it up without --retry.
RESUMABLE = frozenset({Status.PREEMPTED})


class BusyError(Exception):
    pass


@dataclass(frozen=True)
class Step:
    cell: Cell
    phase: Phase


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
    return _by_base(_needed(cells, records, retry, rerun))


def base_of(cell: Cell) -> tuple:
    """What an evaluation worker loads before any adapter: cells with equal values can share it."""
    return (cell.model, cell.eval_bits, cell.gpus)


def _by_base(steps: list[Step]) -> list[Step]:
    """Per base (in matrix order): its trainings, then its base rows' and adapters' evaluations."""
    order = {base: i for i, base in enumerate(dict.fromkeys(base_of(s.cell) for s in steps))}

    def rank(item: tuple[int, Step]) -> tuple:
        index, step = item
        phase = 0 if step.phase == Phase.TRAIN else (1 if step.cell.is_base else 2)
        return (order[base_of(step.cell)], phase, index)

    return [step for _, step in sorted(enumerate(steps), key=rank)]


def _needed(cells, records, retry, rerun) -> list[Step]:
    last = latest(records)
    again = retry | RESUMABLE
    steps: list[Step] = []
    for cell in cells:
        if not cell.is_base:
            train = last.get((cell.key, Phase.TRAIN))
            if rerun or train is None or train.status in again:
                steps += [Step(cell, Phase.TRAIN), Step(cell, Phase.EVAL)]
                continue
            if train.status != Status.OK:
                continue
        evaluated = last.get((cell.key, Phase.EVAL))
        if rerun or evaluated is None or evaluated.status in again:
            steps.append(Step(cell, Phase.EVAL))
    return steps


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
    after it is stored (bench.orchestration.console's matrix bar)."""
    written: list[RunRecord] = []
    number = {id(step): i for i, step in enumerate(steps, start=1)}

    def tag(step: Step) -> str:
        return f"[{number[id(step)]}/{len(steps)}] {step.phase:<5} {step.cell.id}"

    last: dict = {}  # the store's newest record per (cell, phase): read once, then kept up to date

    def emit(step: Step, record: RunRecord) -> None:
        store.append(record)
        written.append(record)
        last[(record.cell_key, record.phase)] = record
        progress(f"{tag(step)}: {summary(record)}")
        if on_record is not None:
            on_record(record)

    with exclusive_run(store.root), STOP:
        last.update(latest(store.records()))
        for leftover in kill_leftovers(store.root):  # only now: holding the lock, no other runner lives
            progress(f"killed a worker left by an interrupted run: {leftover}")
        index = 0
        while index < len(steps):
            if STOP.requested:
                progress(f"stopped on request: {len(steps) - index} steps left for the next run")
                break
            step = steps[index]
            if step.phase != Phase.EVAL:  # trainings and the gate's speed runs: one step, one worker
                progress(tag(step))
                emit(step, execute(step))
                index += 1
                continue
            group = [step]
            while index + len(group) < len(steps) and _same_eval_base(steps[index + len(group)], step):
                group.append(steps[index + len(group)])
            index += len(group)
            ready = [s for s in group if s.cell.is_base or is_ok(last.get((s.cell.key, Phase.TRAIN)))]
            for skipped in (s for s in group if s not in ready):
                progress(f"{tag(skipped)}: skipped (training did not succeed)")
            if execute_group is not None and len(ready) > 1:
                progress(f"{tag(ready[0])} (and {len(ready) - 1} more on one loaded base)")
                execute_group(ready, _emit_by_key(ready, emit))
                continue
            for each in ready:
                if STOP.requested:
                    break
                progress(tag(each))
                emit(each, execute(each))
    return written


def _emit_by_key(steps: list[Step], emit) -> Callable[[RunRecord], None]:
    by_key = {s.cell.key: s for s in steps}
    return lambda record: emit(by_key[record.cell_key], record)


def _same_eval_base(step: Step, first: Step) -> bool:
    return step.phase == Phase.EVAL and base_of(step.cell) == base_of(first.cell)


def summary(record: RunRecord) -> str:
    text = f"{record.status} in {record.wall_s:.0f}s"
    m = record.metrics
    if record.status != Status.OK:
        return f"{text}: {(record.error or '').splitlines()[-1] if record.error else 'see log'}"
    if record.phase in (Phase.TRAIN, Phase.PLAIN, Phase.SPEED):
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
