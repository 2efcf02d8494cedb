"""The regression gate: a matrix's current records against a committed baseline file. Pure (no torch).

Baseline file (JSON, or YAML by extension), written by `bench check --update`:
  {"matrix": "ci", "cells": {"<cell id>": {"key": "<cell key>", "metrics": {
      "fpb/finlora/accuracy": {"value": 0.71, "tolerance": 0.05, "kind": "absolute", "better": "higher"},
      "train_loss_last": {"value": 0.4, "tolerance": 0.3, "kind": "relative", "better": "lower"},
      "train_speed_vs_plain": {"value": 1.45, "low": 1.31, "high": 1.58, "floor": 1.2, "kind": "floor",
                               "better": "higher"}}}}}
Metrics: accuracy and weighted F1 per task under the cell's primary scorer; train_loss_last; and
train_speed_vs_plain, bench's training over the plain script's from the newest speed series after the
cell's training (bench.gate.pairing, bench.gate.speed_check): its 95% lower bound must stay >= the floor.
Only regressions fail: a score that rises or a loss that falls beyond the tolerance is "improved".
Reading and writing the file: bench.gate.baseline_file.
Also failing: a NaN or infinite value, a cell whose settings (its key) differ from the baseline's unless
--update, a missing record, a missing or failed speed series unless --no-speed.
"paired_gate": ["accuracy"] in the file adds bench.gate.paired_gate's checks: each adapter must beat its
base row (and a constant majority-class answer) on the same rows, 95% paired lower bound above 0.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench.core.cell import Cell
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import latest
from bench.gate.baseline_file import CheckError, load_baseline, updated, write_baseline
from bench.gate.paired_gate import gate_metrics, paired_rows
from bench.gate.pairing import newest_series, series_ratio
from bench.gate.rows import Row
from bench.gate.speed import TOO_NOISY, SpeedRatio
from bench.gate.speed_check import HINT, SPEED, UNDECIDED, floor_of, speed_lines, speed_row

__all__ = ["CheckError", "Row", "gate", "load_baseline", "speed_floors"]  # what callers import from here


def current_metrics(
    cells: tuple[Cell, ...], last: dict, records: list[RunRecord], speed: bool = True
) -> tuple[dict[str, dict], list[Row], dict[str, SpeedRatio | str]]:
    """Per cell id: {metric: value} from the latest ok records; rows for what is missing; per trained
    single-process cell (when `speed`), its speed ratio or why there is none."""
    found, missing, speeds = {}, [], {}
    for cell in cells:
        values = {}
        for phase in cell.phases():
            record = last.get((cell.key, phase))
            if record is None or record.status != Status.OK:
                why = "no record" if record is None else f"{phase} {record.status}"
                missing.append(Row(cell.id, f"({phase})", None, None, why, "MISSING"))
                continue
            values.update(_phase_metrics(cell, record))
            if phase == Phase.TRAIN and speed and cell.gpus == 1:  # the plain script runs one process
                speeds[cell.id] = series_ratio(newest_series(record, records))
                if isinstance(speeds[cell.id], SpeedRatio):
                    values[SPEED] = speeds[cell.id].estimate
        found[cell.id] = values
    return found, missing, speeds


def speed_floors(path: Path) -> dict[str, float]:
    """cell id -> its speed floor from the baseline file, for `--run` to tell a too-noisy series (no file
    yet, as before a first --update: the default floor for every cell)."""
    if not path.exists():
        return {}
    cells = load_baseline(path)["cells"]
    return {cell_id: floor_of((c or {}).get("metrics", {}).get(SPEED)) for cell_id, c in cells.items()}


def _phase_metrics(cell: Cell, record: RunRecord) -> dict:
    if record.phase == Phase.EVAL:
        primary = [s for s in record.scores if s.get("scorer") == cell.eval.scorer]
        out = {}
        for s in primary:
            out[f"{s['task']}/{s['scorer']}/accuracy"] = s["accuracy"]
            if s.get("weighted_f1") is not None:
                out[f"{s['task']}/{s['scorer']}/weighted_f1"] = s["weighted_f1"]
        return out
    return {"train_loss_last": record.metrics["train_loss_last"]}


def diff_against_baseline(
    baseline: dict, current: dict[str, dict], keys: dict[str, str], speeds: dict[str, SpeedRatio | str]
) -> list[Row]:
    rows = []
    cells = baseline.get("cells", {})
    for cell_id in sorted(set(cells) | set(current)):
        if cell_id not in current:
            rows.append(Row(cell_id, "(cell)", None, None, "not in the matrix", "MISSING"))
            continue
        if cell_id not in cells:
            rows.append(Row(cell_id, "(cell)", None, None, "not in the baseline; --update", "NEW"))
            continue
        if cells[cell_id].get("key") not in (None, keys[cell_id]):
            why = (f"key {keys[cell_id]}, baseline's {cells[cell_id]['key']}: the matrix changed this cell's "
                   "settings; --update accepts them")  # fmt: skip
            rows.append(Row(cell_id, "(settings)", None, None, why, "CHANGED"))
        metrics = cells[cell_id].get("metrics", {})
        rows += _compare_cell(cell_id, {k: v for k, v in metrics.items() if k != SPEED}, current[cell_id])
        if cell_id in speeds:
            rows.append(speed_row(cell_id, metrics.get(SPEED), speeds[cell_id]))
    return rows


def _compare_cell(cell_id: str, base: dict, now: dict) -> list[Row]:
    rows = []
    for metric in sorted(set(base) | set(now) - {SPEED}):
        if metric not in base:
            rows.append(Row(cell_id, metric, None, now[metric], "not in the baseline", "new"))
        elif metric not in now:
            rows.append(Row(cell_id, metric, base[metric]["value"], None, "-", "MISSING"))
        else:
            rows.append(verdict(cell_id, metric, base[metric], now[metric]))
    return rows


def verdict(cell_id: str, metric: str, entry: dict, value: float) -> Row:
    kind, better, tolerance = entry["kind"], entry["better"], entry["tolerance"]
    ref = entry["value"]
    text = f"±{tolerance:g}" if kind == "absolute" else f"±{100 * tolerance:g}%"
    if not _finite(value):  # NaN compares false with everything: it would pass every test below
        return Row(cell_id, metric, ref, value, f"{text} ({better} better); not a number", "NOT FINITE")
    allowed = tolerance * abs(ref) if kind == "relative" else tolerance
    gain = (value - ref) if better == "higher" else (ref - value)  # positive = better than baseline
    status = "REGRESSED" if gain < -allowed - 1e-12 else "improved" if gain > allowed else "ok"
    return Row(cell_id, metric, ref, value, f"{text} ({better} better)", status)


def _finite(value) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def table(rows: list[Row]) -> str:
    head = ("cell", "metric", "baseline", "now", "delta", "tolerance", "verdict")
    body = [
        (r.cell, r.metric, _num(r.baseline), _num(r.now), _delta(r), r.tolerance, r.verdict) for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])  # fmt: skip


def _paired(baseline: dict, path: Path, cells, records: list[RunRecord], samples) -> list[Row]:
    return paired_rows(cells, latest(records), gate_metrics(baseline, path), samples)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(row: Row) -> str:
    if row.baseline is None or row.now is None:
        return "-"
    return f"{round(row.now - row.baseline, 4) + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def gate(
    cells: tuple[Cell, ...],
    matrix: str,
    records: list[RunRecord],
    path: Path,
    update: bool,
    samples=None,
    speed: bool = True,
) -> tuple[int, str]:
    """(exit status, text): 1 on a regression or a missing cell/record, 3 when only a speed series was too
    noisy to decide (_status); --update rewrites the file instead.
    samples (bench.core.samples.SampleReader) reads per-row outputs for the baseline's paired_gate.
    speed=False (--no-speed): no speed check, said in the output."""
    keys = {c.id: c.key for c in cells}
    current, missing, speeds = current_metrics(cells, latest(records), records, speed)
    lines = speed_lines(speeds)
    if not speed:
        lines.append(f"note: {SPEED} not checked (--no-speed): bench's speed against the plain script "
                     "is not gated by this run")  # fmt: skip
    if update:
        return _update(path, matrix, current, keys, speeds, missing, lines)
    baseline = load_baseline(path)
    rows = diff_against_baseline(baseline, current, keys, speeds)
    rows = missing + rows + _paired(baseline, path, cells, records, samples)
    failed = [r for r in rows if r.failed]
    verdict = f"FAILED: {len(failed)} of {len(rows)} checks" if failed else f"passed: {len(rows)} checks"
    if any(r.metric == SPEED for r in failed):
        verdict += f"\n{SPEED}: {HINT}"
    return _status(failed), "\n".join([*lines, table(rows), verdict])


def _status(failed: list[Row]) -> int:
    """0 passed; UNDECIDED (3) when every failure is a speed series too noisy to decide (the series does
    not say bench is slower; a caller may treat it as a warning); 1 otherwise."""
    if not failed:
        return 0
    return UNDECIDED if all(r.verdict == TOO_NOISY for r in failed) else 1


def _update(path: Path, matrix: str, current, keys, speeds, missing: list[Row], lines) -> tuple[int, str]:
    """--update refuses what it cannot vouch for: a missing record, a NaN, an unmeasured speed."""
    refused = missing + [
        Row(cell, metric, None, value, "not a number", "NOT FINITE")
        for cell, values in current.items() for metric, value in values.items() if not _finite(value)
    ] + [speed_row(cell, None, why) for cell, why in speeds.items() if isinstance(why, str)]  # fmt: skip
    if refused:
        return 1, "\n".join([*lines, table(refused), f"not updated: {path} needs every cell's records, "
                             "finite values, and a speed series (or --no-speed)"])  # fmt: skip
    old = load_baseline(path) if path.exists() else None
    write_baseline(path, updated(old, matrix, current, keys, speeds))
    count = sum(len(m) for m in current.values())
    return 0, "\n".join([*lines, f"wrote {path}: {len(current)} cells, {count} metrics"])
