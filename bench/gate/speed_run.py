"""The regression gate's plain-script runs (`bench check --run`): for each trained cell that needs one
(check.plain_needed), a step of phase `plain` that the runner executes through the launcher like any
other step: bench.workers.plain in a subprocess with the cell's settings, its record appended as it
ends, under the same run lock. Its tokens/s is the denominator of `train_speed_vs_plain`.
"""

from __future__ import annotations

import socket

from bench.core.records import Phase, RunRecord, Status
from bench.core.store import Store
from bench.gate.pairing import plain_needed
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step, run


def measure_missing(cells, store: Store, launcher: Launcher, progress=print) -> list[RunRecord]:
    """Run the plain script for every trained cell of this host that has no plain run after it."""
    todo, notes = plain_needed(cells, store.records(), socket.gethostname())
    for note in notes:
        progress(f"note: {note}")
    if not todo:
        return []
    progress(f"plain-script baseline (HF Trainer + peft, same settings): {len(todo)} trained cells")
    written = run([Step(cell, Phase.PLAIN) for cell, _ in todo], store, launcher, progress)
    trains = {cell.key: train for cell, train in todo}
    for record in written:
        if record.status == Status.OK:
            progress(f"{record.cell_id}: {speed_ratio(record, trains[record.cell_key])}")
    return written


def speed_ratio(plain: RunRecord, train: RunRecord) -> str:
    bench, theirs = train.metrics.get("tokens_per_s") or 0, plain.metrics["tokens_per_s"]
    return f"plain {theirs:.0f} tokens/s; bench {bench:.0f}, {bench / theirs:.2f}x plain"
