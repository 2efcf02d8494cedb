"""What both workers share: argument parsing, outcome files, and turning exceptions into statuses."""

from __future__ import annotations

import argparse
import json
import os
import traceback
from pathlib import Path

from bench.core.cell import Cell

STARTED = "eval-started"  # the evaluation worker's mark in a cell's folder: it began that cell


def parse_args(argv, description: str, many: bool = False) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--cell-dir", type=Path, required=True, action="append" if many else "store",
        help="holds cell.json; outputs go here" + (" (repeat it: cells in order)" if many else ""),
    )  # fmt: skip
    parser.add_argument("--data-dir", type=Path, required=True)
    return parser.parse_args(argv)


def read_cell(cell_dir: Path) -> Cell:
    return Cell.from_dict(json.loads((cell_dir / "cell.json").read_text()))


def write_outcome(path: Path, outcome: dict) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(outcome, indent=1, sort_keys=True, default=str))
    os.replace(tmp, path)  # atomic: the launcher never reads half an outcome


def failure(exc: BaseException) -> dict:
    import torch

    status = "oom" if isinstance(exc, torch.OutOfMemoryError) else "failed"
    print(traceback.format_exc(), flush=True)
    return {"status": status, "error": f"{type(exc).__name__}: {exc}"}


def progress(message: str) -> None:
    print(f"progress: {message}", flush=True)
