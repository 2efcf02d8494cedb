"""What a run shows while it works: tqdm bars on a terminal, plain lines everywhere else (CI logs).

On a terminal: one bar for the matrix (steps done of N) and one per running step, fed by the events
workers print (bench.workers.protocol.event): training steps with loss and tokens/s, evaluation rows,
each with its rate and ETA. The runner's own lines (a step starts, a record is written) go above the
bars. Not on a terminal: those lines only, plus the workers' human progress lines (the launcher
echoes them), so a log stays one line per thing that happened.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO

from tqdm import tqdm

from bench.core.records import RunRecord

UNITS = {"train": "step", "plain": "step", "eval": "row"}


class Console:
    def __init__(self, steps: int, stream: TextIO | None = None, bars: bool | None = None):
        self.stream = stream or sys.stdout
        self.bars = _wide_terminal(self.stream) if bars is None else bars
        self.matrix = (
            tqdm(total=steps, desc="matrix", unit="step", file=self.stream, position=0, dynamic_ncols=True)
            if self.bars
            else None
        )
        self.running: dict[tuple[str, str], tqdm] = {}  # (cell id, phase) -> its bar

    def line(self, message: str) -> None:
        if self.bars:
            tqdm.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def worker_event(self, event: dict) -> None:
        """One event a worker printed: {"cell", "phase", "done", "total", and optional "loss",
        "tokens_per_s"}. Ignored without bars: the workers' progress lines say the same."""
        if not self.bars:
            return
        key = (event["cell"], event["phase"])
        bar = self.running.get(key)
        if bar is None:
            bar = tqdm(
                total=event["total"], desc=f"{event['phase']} {event['cell']}",
                unit=UNITS.get(event["phase"], "it"), file=self.stream, position=1, leave=False,
                dynamic_ncols=True,
            )  # fmt: skip
            self.running[key] = bar
        bar.total = event["total"]
        bar.update(event["done"] - bar.n)  # update(), not n=: tqdm's rate and ETA come from updates
        shown = {k: event[k] for k in ("loss", "tokens_per_s") if event.get(k) is not None}
        if shown:
            bar.set_postfix(shown, refresh=False)
        bar.refresh()

    def record_written(self, record: RunRecord) -> None:
        bar = self.running.pop((record.cell_id, str(record.phase)), None)
        if bar is not None:
            bar.close()
        if self.matrix is not None:
            self.matrix.update(1)

    def close(self) -> None:
        for bar in self.running.values():
            bar.close()
        self.running.clear()
        if self.matrix is not None:
            self.matrix.close()


def _wide_terminal(stream: TextIO) -> bool:
    """A terminal wide enough for a bar (a pseudo-terminal without a size reports 0 columns)."""
    try:
        return stream.isatty() and os.get_terminal_size(stream.fileno()).columns >= 40
    except (OSError, ValueError, AttributeError):
        return False
