"""The gate's speed series (`bench check --run`): for each trained cell that needs one
(pairing.speed_needed), bench's training worker (phase `speed`) and the plain script (phase `plain`,
HF Trainer + peft) alternately, `repetitions` times each, every one a worker subprocess started by the
launcher on the cell's settings for the same number of steps, its record appended as it ends, under
the run lock. Alternating puts both sides under the same load on a shared machine, minute by minute.
"""

from __future__ import annotations

import dataclasses
import uuid

from bench.core.records import Phase, RunRecord
from bench.core.store import Store, latest
from bench.gate.pairing import ORDER, PLANNED, SERIES, newest_series, series_ratio, speed_needed
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step, run

REPETITIONS = 3  # per side
STEPS = 8  # per repetition: 2 warm-up steps (bench.gate.speed.WARMUP_STEPS) and 6 timed ones; on
# a 2-core CPU an 8-bit step takes seconds, and the series runs in every CI gate


def interleaved(cell, repetitions: int) -> list[Step]:
    """bench, plain, bench, plain, ...: `repetitions` of each, bench first."""
    return [Step(cell, phase) for _ in range(repetitions) for phase in (Phase.SPEED, Phase.PLAIN)]


def measure_speed(
    cells, store: Store, launcher: Launcher, repetitions: int = REPETITIONS, progress=print
) -> list[RunRecord]:
    """Run a speed series for every trained cell that has no complete one after its training."""
    todo, notes = speed_needed(cells, store.records())
    for note in notes:
        progress(f"note: {note}")
    written = []
    for cell in todo:
        steps = interleaved(cell, repetitions)
        progress(f"speed series for {cell.id}: bench and the plain script (HF Trainer + peft) alternately, "
                 f"{repetitions} x {launcher.timing_steps} steps each")  # fmt: skip
        written += run(steps, store, _stamped(launcher, steps, uuid.uuid4().hex[:12]), progress)
        records = store.records()
        train = latest(records)[(cell.key, Phase.TRAIN)]
        ratio = series_ratio(newest_series(train, records))
        progress(f"{cell.id}: train_speed_vs_plain {ratio if isinstance(ratio, str) else ratio.text()}")
    return written


def _stamped(launcher: Launcher, steps: list[Step], series: str):
    """The launcher, each record's metrics stamped with its series, its order and the series' length."""
    order = {id(step): i for i, step in enumerate(steps)}

    def execute(step: Step) -> RunRecord:
        record = launcher(step)
        stamp = {SERIES: series, ORDER: order[id(step)], PLANNED: len(steps)}
        return dataclasses.replace(record, metrics={**record.metrics, **stamp})

    return execute
