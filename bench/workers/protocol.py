"""What both workers share: argument parsing, outcome files, and turning exceptions into statuses."""

from __future__ import annotations

import argparse
import json
import traceback
from pathlib import Path

from bench.core.cell import Cell
from bench.core.outcomes import EVENT_PREFIX, Outcome, outcome_path
from bench.core.records import Phase, Status


def parse_args(argv, description: str, many: bool = False, timing: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    if timing:  # the gate's speed repetitions: N steps on the cell's settings, a `speed` outcome
        parser.add_argument("--timing-steps", type=int, metavar="N", help="time N steps; keep no adapter")
    parser.add_argument(
        "--cell-dir", type=Path, required=True, action="append" if many else "store",
        help="holds cell.json; outputs go here" + (" (repeat it: cells in order)" if many else ""),
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, required=True)
    return parser.parse_args(argv)


def read_cell(cell_dir: Path) -> Cell:
    return Cell.from_dict(json.loads((cell_dir / "cell.json").read_text()))


def write_outcome(cell_dir: Path, phase: Phase, outcome: Outcome) -> None:
    outcome.write(outcome_path(cell_dir, phase))


def failure(exc: BaseException) -> Outcome:
    import torch

    status = Status.OOM if isinstance(exc, torch.OutOfMemoryError) else Status.FAILED
    print(traceback.format_exc(), flush=True)
    return Outcome(status, error=f"{type(exc).__name__}: {exc}")


def progress(message: str) -> None:
    print(f"progress: {message}", flush=True)


def event(cell: str, phase: str, done: int, total: int, **fields) -> None:
    """A machine-readable progress event: the launcher hands it to the console's bars (not the log)."""
    print(EVENT_PREFIX + json.dumps({"cell": cell, "phase": phase, "done": done, "total": total, **fields}),
          flush=True)  # fmt: skip
