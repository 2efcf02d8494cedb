"""The baseline file of `bench check`: reading it (every entry checked, errors naming the file, the key
and the fix), the rules per metric, and writing it back from current values (`--update`). Pure.

See bench.gate.check for the file's shape and baselines/README.md for what each entry means.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import yaml

from bench.core.metrics import METRICS
from bench.gate.speed import FLOOR
from bench.gate.speed_check import SPEED, speed_entry

# metric suffix -> (kind, default tolerance); the better direction comes from the metric registry.
# --update keeps a tolerance the file already has. The speed ratio has a floor instead (speed_check).
TOLERANCES = {
    "accuracy": ("absolute", 0.05),
    "weighted_f1": ("absolute", 0.05),
    "train_loss_last": ("relative", 0.3),
}


class CheckError(Exception):
    """The baseline file is unreadable or malformed; the message names the file and the fix."""


def rule(metric: str) -> tuple[str, str, float]:
    """(kind, better, default tolerance) of a gated metric, e.g. 'fpb/finlora/accuracy'."""
    name = metric.rsplit("/", 1)[-1]
    kind, tolerance = TOLERANCES[name]
    return kind, "lower" if METRICS[name].lower_is_better else "higher", tolerance


def load_baseline(path: Path) -> dict:
    if not path.is_file():
        raise CheckError(f"{path}: no such baseline file; create it with `bench check MATRIX --update`")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        raise CheckError(f"{path}: not valid {'YAML' if path.suffix != '.json' else 'JSON'} ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
        raise CheckError(f"{path}: needs a mapping with 'cells': {{cell id: {{metrics: ...}}}}")
    for cell_id, cell in list(data["cells"].items()):
        if cell is None:  # a cell written with nothing under it: nothing to check
            data["cells"][cell_id] = cell = {}
        metrics = _metrics_of(path, cell_id, cell)
        for metric, entry in metrics.items():
            metrics[metric] = _entry(path, cell_id, metric, entry)
    return data


def _metrics_of(path: Path, cell_id, cell) -> dict:
    """A baseline cell is a mapping whose 'metrics' is a mapping (empty or absent: nothing to check)."""
    if not isinstance(cell, dict):
        raise CheckError(f"{path}: cells.{cell_id}: must be a mapping {{key: ..., metrics: {{...}}}}, "
                         f"not {type(cell).__name__}; `bench check MATRIX --update` rewrites it")  # fmt: skip
    if cell.get("metrics") is None:
        cell["metrics"] = {}
    metrics = cell["metrics"]
    if not isinstance(metrics, dict):
        raise CheckError(f"{path}: cells.{cell_id}.metrics: must be a mapping of metric name to "
                         f"{{value, tolerance}}, not {type(metrics).__name__}")  # fmt: skip
    return metrics


def finite(value) -> bool:
    """A real number: not a bool, not NaN, not infinite (a NaN tolerance would pass every value)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _entry(path: Path, cell_id: str, metric: str, entry) -> dict:
    where = f"{path}: cells.{cell_id}.metrics.{metric}"
    if not isinstance(entry, dict) or not finite(entry.get("value")):
        got = repr(entry.get("value")) if isinstance(entry, dict) else type(entry).__name__
        raise CheckError(f"{where}: needs a numeric 'value' (finite, and a 'tolerance'), not {got}")
    if metric == SPEED:  # a floor on the interval's lower bound (an older file's tolerance is unused)
        floor = entry.get("floor", FLOOR)
        if not finite(floor) or floor <= 0:
            raise CheckError(f"{where}: 'floor' must be a finite number > 0 (bench / plain), e.g. {FLOOR}")
        return {**entry, "floor": floor, "kind": "floor", "better": "higher"}
    try:
        kind, better, tolerance = rule(metric)
    except KeyError:
        kind, better, tolerance = entry.get("kind"), entry.get("better"), None
    full = {"kind": kind, "better": better, "tolerance": tolerance, **entry}
    if full["kind"] not in ("absolute", "relative") or full["better"] not in ("higher", "lower"):
        raise CheckError(f"{where}: 'kind' must be absolute|relative and 'better' higher|lower")
    if not finite(full["tolerance"]) or full["tolerance"] < 0:
        raise CheckError(f"{where}: 'tolerance' must be a finite number >= 0, not {full['tolerance']!r}")
    return full


def updated(
    old: dict | None, matrix: str, current: dict[str, dict], keys: dict[str, str], speeds: dict
) -> dict:
    """A new baseline from the current values, keeping every tolerance (and kind, better) and floor
    already set; a cell whose speed was not measured (--no-speed) keeps its old speed entry."""
    cells = {}
    for cell_id in sorted(current):
        before = ((old or {}).get("cells", {}).get(cell_id) or {}).get("metrics", {})
        metrics = {}
        for metric, value in sorted(current[cell_id].items()):
            if metric == SPEED:
                metrics[metric] = speed_entry(speeds[cell_id], before.get(SPEED))
                continue
            kind, better, tolerance = rule(metric)
            keep = before.get(metric, {})
            metrics[metric] = {
                "value": round(value, 5),
                "tolerance": keep.get("tolerance", tolerance),
                "kind": keep.get("kind", kind),
                "better": keep.get("better", better),
            }
        if SPEED in before and SPEED not in metrics:
            metrics[SPEED] = before[SPEED]
        cells[cell_id] = {"key": keys[cell_id], "metrics": metrics}
    extra = {k: v for k, v in (old or {}).items() if k not in ("matrix", "cells")}  # notes survive
    return {"matrix": matrix, **extra, "cells": cells}


def write_baseline(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".yaml", ".yml"):
        text = yaml.safe_dump(data, sort_keys=False)
    else:
        text = json.dumps(data, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
