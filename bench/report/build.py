"""Build a matrix's report from its cells and RunRecords: header facts, tables, a flat long table.

Pure (no torch); pandas only for the long table. The display model lives in bench.report.model,
the results and resources tables in bench.report.tables, the published comparison in bench.report.published.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass

import pandas as pd

from bench.core.cell import Cell
from bench.core.comparisons import Comparison
from bench.core.metrics import METRICS, RESOURCES, Metric, shown_in
from bench.core.records import Phase, RunRecord
from bench.report.memory_comparison import memory_comparison
from bench.report.model import (
    CellState,
    Column,
    Entry,
    Table,
    cell_states,
    config_key,
    config_labels,
    eval_tasks,
)
from bench.report.paired_table import SamplesFn, equivalence_table, paired_rows, paired_table
from bench.report.planner_table import planner_table
from bench.report.protocol_facts import protocol_facts
from bench.report.published import score_comparison
from bench.report.seed_table import seed_table
from bench.report.tables import first_line, resources_table, results_table, scorers

__all__ = [
    "METRICS",
    "Column",
    "Entry",
    "LossCurve",
    "Metric",
    "Report",
    "ReportError",
    "Table",
    "build_report",
]


class ReportError(Exception):
    """A report cannot be built; the message says why and what to do."""


@dataclass(frozen=True)
class LossCurve:
    label: str  # configuration, as in the tables
    training_set: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Report:
    matrix: str
    description: str
    scorer: str  # the primary scorer: the one plots use
    facts: tuple[tuple[str, str], ...]
    lists: tuple[tuple[str, tuple[str, ...]], ...]
    tables: tuple[Table, ...]
    long: tuple[dict, ...]
    curves: tuple[LossCurve, ...]

    def frame(self) -> pd.DataFrame:
        frame = pd.DataFrame(list(self.long), columns=LONG_COLUMNS)
        # Nullable integers, so that a missing value does not turn 200 into 200.0 in the CSV.
        return frame.astype({name: "Int64" for name in INT_COLUMNS})


# A store also holds the gate's plain-script runs (Phase.PLAIN): not bench's own.
BENCH_PHASES = (Phase.TRAIN, Phase.EVAL)
SCORER_NOTES = {
    "finlora": "the paper code's keyword mapping",
    "strict": "first valid label; an unparsed answer is an error",
    "finlora2025": "FinLoRA 2025's rule: earliest gold label as a substring; wrong answers raw for F1",
}


def build_report(
    matrix: str,
    description: str,
    cells: list[Cell],
    records: list[RunRecord],
    published: dict,
    *,
    skipped: dict[str, str] | None = None,
    deviations: tuple[str, ...] = (),
    comparisons: tuple[Comparison, ...] = (),
    samples: SamplesFn | None = None,
    tracking: str | None = None,
) -> Report:
    """`skipped`: cell key -> why the fit check skipped it (shown as "skipped: would not fit");
    `deviations`: the matrix's stated departures from the paper's recipe, for the header;
    `samples` reads an eval record's per-row outputs (bench.core.samples.SampleReader); without it the
    paired table lists its pairs and says that no samples were read."""
    keys = {c.key for c in cells}
    mine = [r for r in records if r.cell_key in keys and r.phase in BENCH_PHASES]
    if not mine:
        raise ReportError(
            f"no records for matrix '{matrix}' ({len(cells)} cells, {len(records)} records in the store): "
            f"run `bench run` on it first, or point --results-dir at the store that holds its results"
        )
    stale = sum(1 for r in records if r.matrix == matrix and r.cell_key not in keys)
    states = cell_states(cells, mine, skipped)
    names = scorers(states)
    tables = [results_table(states, name, i == 0) for i, name in enumerate(names)]
    tables += statistics_tables(states, comparisons, names[0], samples)
    tables += [resources_table(states), score_comparison(states, published)]
    tables += [memory_comparison(states, published)]
    tables += [t for t in (planner_table(states),) if t is not None]
    return Report(
        matrix=matrix,
        description=description,
        scorer=names[0],
        facts=facts(matrix, states, mine, stale, names)
        + ((("Deviations from the source", " | ".join(deviations)),) if deviations else ())
        + ((("Tracking", tracking),) if tracking else ()),  # bench.tracking's outcome, a failure included
        lists=problem_lists(states),
        tables=tuple(tables),
        long=tuple(long_rows(matrix, states)),
        curves=loss_curves(states),
    )


def statistics_tables(
    states: list[CellState], comparisons: tuple[Comparison, ...], scorer: str, samples: SamplesFn | None
) -> list[Table]:
    """Seed spread, paired differences and equivalence answers, under the primary scorer."""
    rows = paired_rows(states, comparisons, scorer, samples)
    found = [seed_table(states, scorer), paired_table(rows, scorer) if rows else None]
    return [t for t in (*found, equivalence_table(rows, scorer)) if t is not None]


def facts(
    matrix: str, states: list[CellState], records: list[RunRecord], stale: int, names: list[str]
) -> tuple[tuple[str, str], ...]:
    """The header block: what ran, where, with which software, and how it was scored."""
    outcomes = Counter(st.outcome[0] for st in states)
    order = ("ok", "failed", "oom", "timeout", "preempted", "not_run")
    counts = ", ".join(f"{outcomes[k]} {k.replace('_', ' ')}" for k in order if outcomes[k])
    limits = sorted({str(st.cell.eval.limit or "all") for st in states})
    stale_text = f"; {stale} records of cells no longer in the matrix ignored" if stale else ""
    return (
        ("Matrix", matrix),
        ("Cells", f"{len(states)} ({counts})"),
        ("Hardware", _hardware(records)),
        ("Versions", _versions(records)),
        ("Git", ", ".join(sorted({str(r.env.get("git_sha")) for r in records})) or "unknown"),
        ("Dates", f"{min(r.started_at for r in records)} → {max(r.finished_at for r in records)}"),
        ("Scorers", "; ".join(f"{n} ({SCORER_NOTES.get(n, 'see bench docs')})" for n in names)),
        ("Protocols", protocol_facts(states)),
        ("Decoding", _decoding(states)),
        ("Prompt format", _prompt_formats(states)),
        ("Eval bits", ", ".join(sorted({f"{st.cell.eval_bits}-bit" for st in states}))),
        ("Eval limit", f"{', '.join(limits)} examples per task"),
        ("Records", f"{len(records)}{stale_text}"),
    )


PROMPT_FORMAT_NOTES = {
    "raw": "the task's prompt as it is, no chat template (FinLoRA's)",
    "chat": "the tokenizer's chat template around the task's prompt, in training and evaluation",
}


def _prompt_formats(states) -> str:
    used = Counter(st.cell.prompt_format for st in states)
    return "; ".join(f"{name}: {PROMPT_FORMAT_NOTES[name]} ({n} cell{'s' * (n > 1)})"
                     for name, n in used.items())  # fmt: skip


def _hardware(records: list[RunRecord]) -> str:
    seen: Counter = Counter()
    for r in records:
        devices = r.metrics.get("devices") or ([r.metrics["device"]] if r.metrics.get("device") else [])
        if not devices:
            continue
        if r.metrics.get("device") == "cpu" or devices == ["cpu"]:
            seen["CPU"] += 1
        else:
            seen[", ".join(f"{n}× {name}" for name, n in Counter(devices).items())] += 1
    return "; ".join(f"{k} ({n} record{'s' * (n > 1)})" for k, n in seen.items()) or "unknown"


def _versions(records: list[RunRecord]) -> str:
    found: dict[str, set] = defaultdict(set)
    for r in records:
        found["python"].add(r.env.get("python"))
        for name, version in (r.env.get("packages") or {}).items():
            found[name].add(version)
    parts = [f"{name} {' / '.join(sorted(v for v in vs if v))}" for name, vs in found.items() if any(vs)]
    return "; ".join(parts) or "unknown"


def _decoding(states: list[CellState]) -> str:
    tasks: dict[str, list] = defaultdict(list)
    for st in states:
        for s in st.eval.scores if st.eval else []:
            key = f"{s.get('decoding', '?')}, max_new_tokens {s.get('max_new_tokens', '?')}"
            tasks[key] += [s["task"]] if s["task"] not in tasks[key] else []
    if len(tasks) == 1:
        return next(iter(tasks))
    return "; ".join(f"{k} ({', '.join(v)})" for k, v in tasks.items()) or "unknown (no scores yet)"


def problem_lists(states: list[CellState]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    groups: dict[str, list[str]] = {k: [] for k in ("not_run", "failed", "oom", "timeout")}
    for st in states:
        status, phase = st.outcome
        if status in groups:
            why = first_line(st.record(phase)) or st.skipped
            groups[status].append(f"{st.cell.id}: {st.label}" + (f" — {why}" if why else ""))
    titles = {
        "not_run": "Missing (not run)",
        "failed": "Failed",
        "oom": "Out of memory",
        "timeout": "Timed out",
    }
    out = [(titles[k], tuple(v) or ("none",)) for k, v in groups.items()]
    local = _local_splits(states)
    randoms = tuple(st.cell.id for st in states if st.random)
    notes = Counter(n for st in states for r in (st.train, st.eval) if r for n in r.notes)
    out += [("Local split (not comparable with the paper)", local)] if local else []
    out += [("Random weights (resources only)", randoms)] if randoms else []
    out += (
        [("Run notes", tuple(f"{n} ({c} record{'s' * (c > 1)})" for n, c in notes.items()))] if notes else []
    )
    return tuple(out)


def _local_splits(states: list[CellState]) -> tuple[str, ...]:
    found: dict[str, str] = {}
    for st in states:
        for r in (st.train, st.eval):
            for d in r.data if r else []:
                if d.get("local_split"):
                    found.setdefault(d["task"], d.get("note") or "")
    return tuple(
        f"{task}: local split, not comparable with the paper" + (f" ({note})" if note else "")
        for task, note in sorted(found.items())
    )


LONG_COLUMNS = [
    "matrix", "cell_id", "cell_key", "model", "weights", "training_set", "config", "bits", "rank", "gpus",
    "eval_bits", "status", "outcome", "train_status", "eval_status", "task", "scorer", "n", "accuracy",
    "accuracy_ci_lo", "accuracy_ci_hi", "weighted_f1", "weighted_f1_ci_lo", "weighted_f1_ci_hi", "decoding",
    "max_new_tokens", "protocol", "scored_text", "test_file", "local_split", "trainable_params",
    "model_bytes", "batch_per_gpu", "grad_accum",
    "gpu_mem_sum_gb", "peak_rss_gb", "train_s", "gpu_hours", "adapter_bytes", "tokens_per_s", "s_per_example",
    "eval_gpu_mem_sum_gb", "eval_peak_rss_gb", "device", "note",
]  # fmt: skip
INT_COLUMNS = (
    "bits", "rank", "gpus", "eval_bits", "n", "max_new_tokens", "trainable_params", "model_bytes",
    "batch_per_gpu", "grad_accum", "adapter_bytes",
)  # fmt: skip
TRAIN_KEYS = (
    "trainable_params", "model_bytes", "batch_per_gpu", "grad_accum", "gpu_mem_sum_gb", "peak_rss_gb",
    "train_s", "gpu_hours", "adapter_bytes", "tokens_per_s",
)  # fmt: skip
# Registry columns added since these lists were written go at the end of the CSV, so that the columns
# above keep their places for anyone who reads them by position.
REGISTRY_KEYS = tuple(m.key for m in shown_in(RESOURCES) if m.key not in LONG_COLUMNS)
LONG_COLUMNS += REGISTRY_KEYS
TRAIN_KEYS += tuple(k for k in REGISTRY_KEYS if METRICS[k].phase == Phase.TRAIN)


def long_rows(matrix: str, states: list[CellState]) -> list[dict]:
    """One row per (cell, task, scorer); a cell without scores still gets one row per task."""
    labels = config_labels([st.cell for st in states])
    rows = []
    for st in states:
        base = {"matrix": matrix, **_cell_columns(st, labels[config_key(st.cell)])}
        for task in eval_tasks(st.cell):
            found = [s for s in (st.eval.scores if st.eval else []) if s["task"] == task] or [None]
            rows += [{**base, **_score_columns(st, task, s)} for s in found]
    return rows


def _cell_columns(st: CellState, label: str) -> dict:
    c, train = st.cell, st.train.metrics if st.train else {}
    evalm = st.eval.metrics if st.eval else {}
    return {
        "cell_id": c.id, "cell_key": c.key, "model": c.model.name, "weights": c.model.weights,
        "training_set": c.task, "config": label, "bits": c.bits, "rank": c.rank, "gpus": c.gpus,
        "eval_bits": c.eval_bits, "protocol": c.eval.protocol, "status": st.outcome[0], "outcome": st.label,
        "train_status": str(st.train.status) if st.train else None,
        "eval_status": str(st.eval.status) if st.eval else None,
        **{k: train.get(k) for k in TRAIN_KEYS},
        "s_per_example": evalm.get("s_per_example"), "eval_gpu_mem_sum_gb": evalm.get("gpu_mem_sum_gb"),
        "eval_peak_rss_gb": evalm.get("peak_rss_gb"), "device": train.get("device") or evalm.get("device"),
        **{k: evalm.get(k) for k in REGISTRY_KEYS if METRICS[k].phase == Phase.EVAL},
    }  # fmt: skip


def _score_columns(st: CellState, task: str, s: dict | None) -> dict:
    note = "random weights: resources only" if st.random else ""
    out = {"task": task, "local_split": st.local_split(task), "note": note}
    if s is None:
        return out
    out.update(
        scorer=s["scorer"],
        n=s.get("n"),
        decoding=s.get("decoding"),
        max_new_tokens=s.get("max_new_tokens"),
        scored_text=s.get("scored_text"),
        test_file=s.get("test_file"),
    )
    if st.random:  # resource-only cells: never show their accuracy
        return out
    for key in ("accuracy", "weighted_f1"):
        ci = s.get(f"{key}_ci") or (None, None)
        out.update({key: s.get(key), f"{key}_ci_lo": ci[0], f"{key}_ci_hi": ci[1]})
    return out


def loss_curves(states: list[CellState]) -> tuple[LossCurve, ...]:
    labels = config_labels([st.cell for st in states])
    out = []
    for st in states:
        curve = st.train.metrics.get("loss_curve") if st.train else None
        # A diverged or logged-but-empty step carries no loss: skip the point, keep the curve.
        points = tuple((float(step), float(loss)) for step, loss in curve or () if loss is not None)
        if points:
            out.append(LossCurve(labels[config_key(st.cell)], st.cell.task, points))
    return tuple(out)
