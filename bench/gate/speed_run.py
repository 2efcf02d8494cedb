"""The gate's speed series (`bench check --run`): for each trained cell that needs one
(pairing.speed_needed), bench's training worker (phase `speed`) and the plain script (phase `plain`,
HF Trainer + peft) alternately, `repetitions` times each, every one a worker subprocess started by the
launcher on the cell's settings for the same number of steps, its record appended as it ends, under
the run lock. Alternating puts both sides under the same load on a shared machine, minute by minute.

A series whose interval is too wide to decide against the cell's floor (bench.gate.speed.decide) gets
up to MORE_ROUNDS more rounds of `repetitions` per side, in the same series, before the gate judges it.
"""

from __future__ import annotations

import dataclasses
import uuid

from bench.core.records import Phase, RunRecord
from bench.core.store import Store, latest
from bench.gate.pairing import ORDER, PLANNED, SERIES, newest_series, series_ratio, speed_needed
from bench.gate.speed import FLOOR, MORE_ROUNDS, TOO_NOISY, SpeedRatio, decide
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step, run

REPETITIONS = 3  # per side
STEPS = 8  # per repetition: 2 warm-up steps (bench.gate.speed.WARMUP_STEPS) and 6 timed ones; on
# a 2-core CPU an 8-bit step takes seconds, and the series runs in every CI gate


def interleaved(cell, repetitions: int) -> list[Step]:
    """bench, plain, bench, plain, ...: `repetitions` of each, bench first."""
    return [Step(cell, phase) for _ in range(repetitions) for phase in (Phase.SPEED, Phase.PLAIN)]


def measure_speed(
    cells, store: Store, launcher: Launcher, repetitions: int = REPETITIONS, progress=print,
    floors: dict[str, float] | None = None, more_rounds: int = MORE_ROUNDS,
) -> list[RunRecord]:  # fmt: skip
    """Run a speed series for every trained cell that has no complete one after its training; `floors`
    (cell id -> floor, the baseline's) decide whether a series is too noisy and needs more rounds (at
    most `more_rounds`)."""
    todo, notes = speed_needed(cells, store.records())
    for note in notes:
        progress(f"note: {note}")
    written = []
    for cell in todo:
        progress(f"speed series for {cell.id}: bench and the plain script (HF Trainer + peft) alternately, "
                 f"{repetitions} x {launcher.timing_steps} steps each")  # fmt: skip
        series, ratio = uuid.uuid4().hex[:12], None
        for round_ in range(1 + more_rounds):
            if round_ and not _too_noisy(ratio, (floors or {}).get(cell.id, FLOOR)):
                break
            if round_:
                progress(f"{cell.id}: {ratio.text()} is too noisy to decide; timing {repetitions} more "
                         f"repetitions per side (round {round_ + 1}, at most {1 + more_rounds})")
            steps = interleaved(cell, repetitions)
            first, planned = 2 * repetitions * round_, 2 * repetitions * (round_ + 1)
            written += run(steps, store, _stamped(launcher, steps, series, first, planned), progress)
            ratio = _ratio(cell, store)
        progress(f"{cell.id}: train_speed_vs_plain {ratio if isinstance(ratio, str) else ratio.text()}")
    return written


def _ratio(cell, store: Store) -> SpeedRatio | str:
    records = store.records()
    return series_ratio(newest_series(latest(records)[(cell.key, Phase.TRAIN)], records))


def _too_noisy(ratio: SpeedRatio | str | None, floor: float) -> bool:
    return isinstance(ratio, SpeedRatio) and decide(ratio, floor, last=False) == TOO_NOISY


def _stamped(launcher: Launcher, steps: list[Step], series: str, first: int, planned: int):
    """The launcher, each record's metrics stamped with its series, its order (from `first`) and the
    series' length so far (`planned`)."""
    order = {id(step): first + i for i, step in enumerate(steps)}

    def execute(step: Step) -> RunRecord:
        record = launcher(step)
        stamp = {SERIES: series, ORDER: order[id(step)], PLANNED: planned}
        return dataclasses.replace(record, metrics={**record.metrics, **stamp})

    return execute
