"""The regression gate: a matrix's current records against a committed baseline file. Pure (no torch).

Baseline file (JSON, or YAML by extension), written by `bench check --update`:
  {"matrix": "ci", "cells": {"<cell id>": {"key": "<cell key>", "metrics": {
      "fpb/finlora/accuracy": {"value": 0.71, "tolerance": 0.05, "kind": "absolute", "better": "higher"},
      "train_loss_last": {"value": 0.4, "tolerance": 0.3, "kind": "relative", "better": "lower"}}}}}
Metrics: accuracy and weighted F1 per task under the cell's primary scorer; train_loss_last; and
train_speed_vs_plain (bench tokens/s over the plain script's tokens/s on the same host), only where the
store holds a plain-script record (phase "plain", written by `bench check --run` through
bench.workers.plain) of the same cell from the same host: raw tokens/s from different machines say
nothing about a regression.
Only regressions fail: a score that rises or a loss that falls beyond the tolerance is "improved".
"paired_gate": ["accuracy"] in the file adds bench.gate.paired_gate's checks: each adapter must beat its
base row (and a constant majority-class answer) on the same rows, 95% paired lower bound above 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.core.cell import Cell
from bench.core.metrics import METRICS
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import latest
from bench.gate.pairing import newest_plain, plain_speed

SPEED = "train_speed_vs_plain"
SPEED_HINT = (
    "bench and the plain script run a minute or two apart; another busy process on the machine during "
    "either one moves the ratio several-fold. Rerun on a quiet machine (a fresh --results-dir) first"
)
# metric suffix -> (kind, default tolerance); the better direction comes from the metric registry.
# --update keeps a tolerance the file already has.
TOLERANCES = {
    "accuracy": ("absolute", 0.05),
    "weighted_f1": ("absolute", 0.05),
    "train_loss_last": ("relative", 0.3),
    SPEED: ("relative", 0.3),
}


class CheckError(Exception):
    """The baseline file is unreadable or malformed; the message names the file and the fix."""


@dataclass(frozen=True)
class Row:
    cell: str
    metric: str
    baseline: float | None
    now: float | None
    tolerance: str
    verdict: str  # ok | improved | new | REGRESSED | MISSING | NEW (a cell the baseline lacks) | NOT BETTER

    @property
    def failed(self) -> bool:
        return self.verdict in ("REGRESSED", "MISSING", "NEW", "NOT BETTER")


def rule(metric: str) -> tuple[str, str, float]:
    """(kind, better, default tolerance) of a gated metric, e.g. 'fpb/finlora/accuracy'."""
    name = metric.rsplit("/", 1)[-1]
    kind, tolerance = TOLERANCES[name]
    return kind, "lower" if METRICS[name].lower_is_better else "higher", tolerance


def current_metrics(
    cells: tuple[Cell, ...], last: dict, records: list[RunRecord]
) -> tuple[dict[str, dict], list[Row], list[str]]:
    """Per cell id: {metric: value} from the latest ok records; rows for what is missing; notes."""
    found, missing, notes = {}, [], []
    for cell in cells:
        values = {}
        for phase in cell.phases():
            record = last.get((cell.key, phase))
            if record is None or record.status != Status.OK:
                why = "no record" if record is None else f"{phase} {record.status}"
                missing.append(Row(cell.id, f"({phase})", None, None, why, "MISSING"))
                continue
            values.update(_phase_metrics(cell, record, records, notes))
        found[cell.id] = values
    return found, missing, notes


def _phase_metrics(cell: Cell, record: RunRecord, records: list[RunRecord], notes: list[str]) -> dict:
    if record.phase == Phase.EVAL:
        primary = [s for s in record.scores if s.get("scorer") == cell.eval.scorer]
        out = {}
        for s in primary:
            out[f"{s['task']}/{s['scorer']}/accuracy"] = s["accuracy"]
            if s.get("weighted_f1") is not None:
                out[f"{s['task']}/{s['scorer']}/weighted_f1"] = s["weighted_f1"]
        return out
    out = {"train_loss_last": record.metrics["train_loss_last"]}
    plain = plain_speed(record, records)
    host = record.env.get("host")
    if plain:
        out[SPEED] = record.metrics["tokens_per_s"] / plain
    elif (tried := newest_plain(record, records, ok=False)) is not None:
        why = tried.error.splitlines()[-1] if tried.error else "see its log"
        notes.append(f"{cell.id}: plain-script run on host {host} {tried.status} ({why}); speed not compared")
    else:
        notes.append(f"{cell.id}: no plain-script speed on host {host}; speed not compared")
    return out


def diff_against_baseline(
    baseline: dict, current: dict[str, dict], keys: dict[str, str]
) -> tuple[list[Row], list[str]]:
    rows, notes = [], []
    cells = baseline.get("cells", {})
    for cell_id in sorted(set(cells) | set(current)):
        if cell_id not in current:
            rows.append(Row(cell_id, "(cell)", None, None, "not in the matrix", "MISSING"))
            continue
        if cell_id not in cells:
            rows.append(Row(cell_id, "(cell)", None, None, "not in the baseline; --update", "NEW"))
            continue
        if cells[cell_id].get("key") not in (None, keys[cell_id]):
            notes.append(f"{cell_id}: the matrix changed this cell's settings since the baseline was made")
        rows += _compare_cell(cell_id, cells[cell_id].get("metrics", {}), current[cell_id])
    return rows, notes


def _compare_cell(cell_id: str, base: dict, now: dict) -> list[Row]:
    rows = []
    for metric in sorted(set(base) | set(now)):
        if metric not in base:
            rows.append(Row(cell_id, metric, None, now[metric], "not in the baseline", "new"))
        elif metric not in now:
            if metric == SPEED:  # the plain-script record is per machine: its absence is not a regression
                continue
            rows.append(Row(cell_id, metric, base[metric]["value"], None, "-", "MISSING"))
        else:
            rows.append(verdict(cell_id, metric, base[metric], now[metric]))
    return rows


def verdict(cell_id: str, metric: str, entry: dict, value: float) -> Row:
    kind, better, tolerance = entry["kind"], entry["better"], entry["tolerance"]
    ref = entry["value"]
    allowed = tolerance * abs(ref) if kind == "relative" else tolerance
    gain = (value - ref) if better == "higher" else (ref - value)  # positive = better than baseline
    status = "REGRESSED" if gain < -allowed - 1e-12 else "improved" if gain > allowed else "ok"
    text = f"±{tolerance:g}" if kind == "absolute" else f"±{100 * tolerance:g}%"
    return Row(cell_id, metric, ref, value, f"{text} ({better} better)", status)


def load_baseline(path: Path) -> dict:
    if not path.is_file():
        raise CheckError(f"{path}: no such baseline file; create it with `bench check MATRIX --update`")
    try:
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise CheckError(f"{path}: not valid {'YAML' if path.suffix != '.json' else 'JSON'} ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), dict):
        raise CheckError(f"{path}: needs a mapping with 'cells': {{cell id: {{metrics: ...}}}}")
    for cell_id, cell in data["cells"].items():
        for metric, entry in (cell or {}).get("metrics", {}).items():
            data["cells"][cell_id]["metrics"][metric] = _entry(path, cell_id, metric, entry)
    return data


def _entry(path: Path, cell_id: str, metric: str, entry) -> dict:
    where = f"{path}: cells.{cell_id}.metrics.{metric}"
    if not isinstance(entry, dict) or not isinstance(entry.get("value"), int | float):
        raise CheckError(f"{where}: needs a numeric 'value' (and 'tolerance')")
    try:
        kind, better, tolerance = rule(metric)
    except KeyError:
        kind, better, tolerance = entry.get("kind"), entry.get("better"), None
    full = {"kind": kind, "better": better, "tolerance": tolerance, **entry}
    if full["kind"] not in ("absolute", "relative") or full["better"] not in ("higher", "lower"):
        raise CheckError(f"{where}: 'kind' must be absolute|relative and 'better' higher|lower")
    if not isinstance(full["tolerance"], int | float) or full["tolerance"] < 0:
        raise CheckError(f"{where}: 'tolerance' must be a number >= 0")
    return full


def updated(old: dict | None, matrix: str, current: dict[str, dict], keys: dict[str, str]) -> dict:
    """A new baseline from the current values, keeping every tolerance (and kind, better) already set."""
    cells = {}
    for cell_id in sorted(current):
        before = ((old or {}).get("cells", {}).get(cell_id) or {}).get("metrics", {})
        metrics = {}
        for metric, value in sorted(current[cell_id].items()):
            kind, better, tolerance = rule(metric)
            keep = before.get(metric, {})
            metrics[metric] = {
                "value": round(value, 5),
                "tolerance": keep.get("tolerance", tolerance),
                "kind": keep.get("kind", kind),
                "better": keep.get("better", better),
            }
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


def table(rows: list[Row]) -> str:
    head = ("cell", "metric", "baseline", "now", "delta", "tolerance", "verdict")
    body = [
        (r.cell, r.metric, _num(r.baseline), _num(r.now), _delta(r), r.tolerance, r.verdict) for r in rows
    ]
    widths = [max(len(line[i]) for line in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
                     for line in [head, *body])  # fmt: skip


def _paired(baseline: dict, path: Path, cells, records: list[RunRecord], samples) -> list[Row]:
    from bench.gate.paired_gate import gate_metrics, paired_rows  # builds on this module's Row

    return paired_rows(cells, latest(records), gate_metrics(baseline, path), samples)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _delta(row: Row) -> str:
    if row.baseline is None or row.now is None:
        return "-"
    return f"{round(row.now - row.baseline, 4) + 0.0:+.4f}"  # + 0.0: no "-0.0000"


def gate(
    cells: tuple[Cell, ...], matrix: str, records: list[RunRecord], path: Path, update: bool, samples=None
) -> tuple[int, str]:
    """(exit status, text): 1 on a regression or a missing cell/record; --update rewrites the file instead.
    samples (bench.core.samples.SampleReader) reads per-row outputs for the baseline's paired_gate."""
    keys = {c.id: c.key for c in cells}
    current, missing, notes = current_metrics(cells, latest(records), records)
    lines = [f"note: {n}" for n in notes]
    if update:
        if missing:
            return 1, "\n".join([*lines, table(missing), f"not updated: {path} needs every cell's records"])
        old = load_baseline(path) if path.exists() else None
        write_baseline(path, updated(old, matrix, current, keys))
        count = sum(len(m) for m in current.values())
        return 0, "\n".join([*lines, f"wrote {path}: {len(current)} cells, {count} metrics"])
    baseline = load_baseline(path)
    rows, more = diff_against_baseline(baseline, current, keys)
    rows = missing + rows + _paired(baseline, path, cells, records, samples)
    failed = [r for r in rows if r.failed]
    verdict = f"FAILED: {len(failed)} of {len(rows)} checks" if failed else f"passed: {len(rows)} checks"
    if any(r.metric == SPEED for r in failed):
        verdict += f"\n{SPEED}: {SPEED_HINT}"
    return (1 if failed else 0), "\n".join([*lines, *(f"note: {n}" for n in more), table(rows), verdict])
