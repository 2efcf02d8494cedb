"""The report's display model: metrics with their display metadata, tables of formatted entries,
and each cell's outcome from its newest records.

Pure (no torch). Every number is formatted here, once, from its metric's display metadata, so the
Markdown and the HTML show the same strings and templates never format numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.catalog import TASKS, TRAINING_SETS
from bench.core.cell import Cell
from bench.core.records import RunRecord, Status
from bench.core.store import latest


def _bytes(value: float) -> str:
    # Decimal units, as the paper's GB figures are.
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def _count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


FORMATS = {
    "pct": lambda v: f"{100 * v:.1f}",
    "pct2": lambda v: f"{v:.2f}",  # already in percent (published numbers, deltas in points)
    "delta_pp": lambda v: f"{v:+.2f}",
    "f1": lambda v: f"{v:.3f}",
    "delta_f1": lambda v: f"{v:+.3f}",
    "gb": lambda v: f"{v:.2f}",
    "hours": lambda v: f"{v:.3f}",
    "rate": lambda v: f"{v:,.1f}",
    "seconds": lambda v: f"{v:.3f}",
    "bytes": _bytes,
    "count": _count,
    "duration": _duration,
    "int": lambda v: f"{int(v)}",
}


@dataclass(frozen=True)
class Metric:
    """How one quantity is shown: label, unit, format name (a key of FORMATS) and direction."""

    key: str
    label: str
    unit: str = ""
    fmt: str = "f1"
    lower_is_better: bool | None = None  # None: no better direction (a count, a setting)

    def format(self, value) -> str:
        return "n/a" if value is None else FORMATS[self.fmt](value)

    @property
    def direction(self) -> str:
        return {True: "lower is better", False: "higher is better", None: ""}[self.lower_is_better]


METRICS = {
    m.key: m
    for m in (
        Metric("accuracy", "Acc", "%", "pct", False),
        Metric("weighted_f1", "F1", "", "f1", False),
        Metric("trainable_params", "Trainable params", "", "count"),
        Metric("model_bytes", "Model size", "", "bytes", True),
        Metric("gpu_mem_sum_gb", "Peak GPU mem (sum)", "GB", "gb", True),
        Metric("peak_rss_gb", "Peak RSS", "GB", "gb", True),
        Metric("train_s", "Train time", "", "duration", True),
        Metric("gpu_hours", "GPU-hours", "h", "hours", True),
        Metric("adapter_bytes", "Adapter", "", "bytes", True),
        Metric("s_per_example", "Inference", "s/example", "seconds", True),
        Metric("tokens_per_s", "Train throughput", "tokens/s", "rate", False),
    )
}


@dataclass(frozen=True)
class Column:
    label: str
    group: str = ""  # column group (a configuration); "" for label columns
    metric: Metric | None = None

    @property
    def heading(self) -> str:
        unit = self.metric.unit if self.metric else ""
        return f"{self.label} ({unit})" if unit else self.label


@dataclass(frozen=True)
class Entry:
    text: str
    value: float | int | str | None = None  # the raw value behind text
    status: str = "ok"  # ok | oom | failed | timeout | not_run | random | none
    best: bool = False
    note: str = ""  # shown on hover in HTML
    detail: str = ""  # secondary text (a 95% interval): beside text in Markdown, below it in HTML


@dataclass(frozen=True)
class Table:
    key: str  # anchor id
    title: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Entry, ...], ...]
    notes: tuple[str, ...] = ()

    @property
    def legend(self) -> tuple[str, ...]:
        """'higher is better: Acc, F1' and 'lower is better: ...', from the columns' metrics."""
        by_way: dict[str, list[str]] = {}
        for col in self.columns:
            if col.metric and col.metric.direction and col.label not in by_way.get(col.metric.direction, []):
                by_way.setdefault(col.metric.direction, []).append(col.label)
        return tuple(f"{way}: {', '.join(labels)}" for way, labels in sorted(by_way.items()))

    @property
    def groups(self) -> tuple[tuple[str, int], ...]:
        """Column groups as (label, span), for a two-row HTML header."""
        out: list[list] = []
        for col in self.columns:
            if out and out[-1][0] == col.group:
                out[-1][1] += 1
            else:
                out.append([col.group, 1])
        return tuple((label, span) for label, span in out)


STATUS_TEXT = {"oom": "OOM", "failed": "failed", "timeout": "timeout"}


@dataclass(frozen=True)
class CellState:
    """One cell with its newest train and eval records (None where not run)."""

    cell: Cell
    train: RunRecord | None
    eval: RunRecord | None

    @property
    def random(self) -> bool:
        return self.cell.model.weights == "random"

    @property
    def outcome(self) -> tuple[str, str]:
        """(status, phase): the first phase that is missing or not ok; ("ok", "") when both are."""
        phases = (("eval", self.eval),) if self.cell.is_base else (("train", self.train), ("eval", self.eval))
        for phase, record in phases:
            if record is None:
                return "not_run", phase
            if record.status != Status.OK:
                return str(record.status), phase
        return "ok", ""

    @property
    def label(self) -> str:
        status, phase = self.outcome
        if status == "not_run":
            return "not evaluated" if phase == "eval" and not self.cell.is_base else "not run"
        return "ok" if status == "ok" else f"{STATUS_TEXT[status]} ({phase})"

    def record(self, phase: str) -> RunRecord | None:
        return self.train if phase == "train" else self.eval

    def score(self, task: str, scorer: str) -> dict | None:
        scores = self.eval.scores if self.eval else []
        return next((s for s in scores if s.get("task") == task and s.get("scorer") == scorer), None)

    def local_split(self, task: str) -> bool:
        infos = [d for r in (self.train, self.eval) if r for d in r.data if d.get("task") == task]
        score_flags = [
            s.get("local_split") for s in (self.eval.scores if self.eval else []) if s["task"] == task
        ]
        return any(d.get("local_split") for d in infos) or any(score_flags)


def cell_states(cells: list[Cell], records: list[RunRecord]) -> list[CellState]:
    newest = latest(records)
    return [CellState(c, newest.get((c.key, "train")), newest.get((c.key, "eval"))) for c in cells]


def config_key(cell: Cell) -> tuple:
    return (
        cell.model.name, cell.model.weights, cell.config_label, cell.gpus, cell.eval_bits, cell.variant,
        cell.nodes,
    )  # fmt: skip


def config_labels(cells: list[Cell]) -> dict[tuple, str]:
    """Readable configuration names in display order.

    GPUs and eval bits are named only where one model and bits-rank pair runs with several values,
    so the usual matrix reads "llama-3.1-8b 4bit-r4", as the paper's tables do.
    """
    model_order = {name: i for i, name in enumerate(dict.fromkeys(c.model.name for c in cells))}
    variants: dict[tuple, set] = {}
    for c in cells:
        variants.setdefault(config_key(c)[:3], set()).add((c.gpus, c.eval_bits))

    def order(c: Cell):
        batch = c.train.batch_per_gpu if c.variant and c.train else 0
        return (model_order[c.model.name], not c.is_base, -(c.bits or 0), c.rank or 0, c.gpus, c.eval_bits,
                batch)  # fmt: skip

    out = {}
    for c in sorted(cells, key=order):
        seen = variants[config_key(c)[:3]]
        label = f"{c.model.name} {c.config_label}"
        label += f" · {c.gpus} GPU" if len({g for g, _ in seen}) > 1 else ""
        label += f" · {c.nodes} nodes × {c.gpus_per_node} GPU" if c.nodes > 1 else ""
        label += f" · eval {c.eval_bits}-bit" if len({e for _, e in seen}) > 1 else ""
        label += f" · batch {c.train.batch_per_gpu}" if c.variant and c.train else ""
        label += " (random weights)" if c.model.weights == "random" else ""
        out.setdefault(config_key(c), label)
    return out


def eval_tasks(cell: Cell) -> tuple[str, ...]:
    return TRAINING_SETS[cell.task].eval_tasks if cell.task in TRAINING_SETS else (cell.task,)


def task_order(task: str) -> int:
    return list(TASKS).index(task) if task in TASKS else len(TASKS)
