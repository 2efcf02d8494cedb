"""The paired gate: a fine-tuned cell must beat its base row on the same test rows. Pure (no torch).

Enabled by the baseline file: `"paired_gate": ["accuracy"]` (or also "weighted_f1"). For every adapter
cell with a base row in the matrix and every task it is scored on, under the cell's primary scorer,
the lower bound of the 95% paired bootstrap interval of (adapter − reference) must be above 0 for two
references: the base row, and a constant adapter that always answers the most frequent gold label of
those rows. The second is why a constant-majority-class adapter cannot pass even where the base model
answers worse than a constant would (a weak base writes free text the scorer cannot read).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench.core.catalog import training_set
from bench.core.cell import Cell
from bench.core.comparisons import pairs
from bench.core.records import RunRecord, Status
from bench.core.samples import Rows, compare_rows, majority_rows
from bench.gate.baseline_file import CheckError
from bench.gate.rows import Row

KEY = "paired_gate"
METRICS = ("accuracy", "weighted_f1")
REFERENCES = ("base", "majority class")


def gate_metrics(baseline: dict, path: Path) -> tuple[str, ...]:
    """The metrics the baseline file asks the paired gate for (none: the gate is off)."""
    wanted = baseline.get(KEY) or []
    if not isinstance(wanted, list) or any(m not in METRICS for m in wanted):
        raise CheckError(f"{path}: '{KEY}' must be a list of {', '.join(METRICS)}, e.g. [\"accuracy\"]")
    return tuple(wanted)


def paired_rows(
    cells: tuple[Cell, ...],
    last: dict[tuple[str, str], RunRecord],
    metrics: tuple[str, ...],
    samples: Callable[[RunRecord, str], Rows | str] | None,
) -> list[Row]:
    """One check per (adapter, task, metric, reference); missing evaluations are the main gate's rows."""
    out = []
    for pair in (p for p in pairs(cells) if p.kind == "vs base" and metrics):
        tuned, base = last.get((pair.a.key, "eval")), last.get((pair.b.key, "eval"))
        if not _ok(tuned) or not _ok(base):
            continue
        scorer = pair.a.eval.scorer
        for task in training_set(pair.a.task).eval_tasks:
            name = f"{task}/{scorer}"
            rows = [
                samples(r, task) if samples else "no results directory: samples not read"
                for r in (tuned, base)
            ]
            why = next((r for r in rows if isinstance(r, str)), None)
            if why:
                out.append(Row(pair.a.id, f"{name} (paired)", None, None, why, "MISSING"))
                continue
            out += _checks(pair.a.id, name, task, scorer, rows[0], rows[1], metrics)
    return out


def _checks(cell_id: str, name: str, task: str, scorer: str, tuned: Rows, base: Rows, metrics) -> list[Row]:
    out = []
    for reference, rows in zip(REFERENCES, (base, majority_rows(tuned, task, scorer)), strict=True):
        result = compare_rows(task, scorer, tuned, rows)
        if isinstance(result, str):
            out.append(Row(cell_id, f"{name} (paired)", None, None, result, "MISSING"))
            continue
        for metric in metrics:
            ci = result.accuracy if metric == "accuracy" else result.weighted_f1
            text = f"95% low > 0; Δ {ci.estimate:+.4f} [{ci.low:+.4f}, {ci.high:+.4f}], n={result.n}"
            verdict = "ok" if ci.low > 0 else "NOT BETTER"
            out.append(Row(cell_id, f"{name}/{metric} − {reference}", None, ci.low, text, verdict))
    return out


def _ok(record: RunRecord | None) -> bool:
    return record is not None and record.status == Status.OK
