"""The one scheduler (pure): which (cell, phase) steps a matrix still needs, in which order, which of them
are ready, and what is taken up again. The local runner (runner.run) and the Ray executor
(ray_executor.RayExecutor) only execute what it hands them and report the records back.

Order: steps come in groups that share a base model (model, eval_bits, GPUs, eval precision): the group's
trainings first, then its evaluations, so that one evaluation worker can load the base once and go through
every adapter of the group (and the base row) on it instead of reloading the base per cell.
Readiness: an adapter's evaluation waits for its training, and runs only if that training ended ok.
Retry and resume: a stored record is a result, unless `retry` names its status or it is RESUMABLE (a
step stopped on request: its training resumes from its checkpoint); a cell the dying evaluation worker of
a group never reached goes to a fresh worker (`after_lost_group`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from bench.core.cell import Cell
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import is_ok, latest

# A step stopped on request (a preemption) is not a result: the next run takes it up without --retry.
RESUMABLE = frozenset({Status.PREEMPTED})


@dataclass(frozen=True)
class Step:
    cell: Cell
    phase: Phase


def cell_status(cell: Cell, records: dict) -> str:
    """new | done | partial | <status of the phase that did not succeed> (oom, failed, timeout, ...)."""
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
    """What an evaluation worker loads before any adapter: cells with equal values can share it (the
    compute dtype too: a base loaded in bf16 cannot serve a cell that pins fp32)."""
    return (cell.model, cell.eval_bits, cell.gpus, cell.eval.precision)


def eval_base(step: Step) -> tuple:
    """What one evaluation task loads: the base, on one node's share of the cell's GPUs."""
    return (*base_of(step.cell), step.cell.gpus_per_node)


def ready_evaluations(steps: Sequence[Step], last: dict) -> tuple[list[Step], list[Step]]:
    """(ready, skipped): an adapter's evaluation is ready once its training's newest record is ok; the
    others are skipped (their training did not succeed)."""
    ready = [s for s in steps if s.cell.is_base or is_ok(last.get((s.cell.key, Phase.TRAIN)))]
    return ready, [s for s in steps if s not in ready]


def eval_groups(steps: Sequence[Step]) -> list[list[Step]]:
    """The plan cut into runs of one step each, except consecutive evaluations on one base: one run."""
    groups: list[list[Step]] = []
    for step in steps:
        same = groups and step.phase == Phase.EVAL and groups[-1][0].phase == Phase.EVAL
        if same and base_of(groups[-1][0].cell) == base_of(step.cell):
            groups[-1].append(step)
        else:
            groups.append([step])
    return groups


def after_lost_group(pending: list[int], reached: list[int]) -> tuple[list[int], list[int]]:
    """A group's evaluation worker ended before every cell had its record: (the cells that get its failure,
    the cells it never reached, for a fresh worker). Nothing reached: the shared base's load failed, so
    every cell gets it; else the one cell in progress does."""
    hit = pending if not reached else [pending[0]]
    return hit, [i for i in pending if i not in hit]


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
