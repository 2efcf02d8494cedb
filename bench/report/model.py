"""The report's display model: tables of formatted entries,
and each cell's outcome from its newest records.

Pure (no torch). Every number is formatted here, once, from its metric's display metadata, so the
Markdown and the HTML show the same strings and templates never format numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core import axes, protocols
from bench.core.catalog import tasks as known_tasks
from bench.core.catalog import training_sets
from bench.core.cell import Cell
from bench.core.metrics import Metric
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import latest
from bench.planning.fit import SKIPPED


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


STATUS_TEXT = {"oom": "OOM", "failed": "failed", "timeout": "timeout", "preempted": "preempted"}


@dataclass(frozen=True)
class CellState:
    """One cell with its newest train and eval records (None where not run)."""

    cell: Cell
    train: RunRecord | None
    eval: RunRecord | None
    skipped: str = ""  # why `bench run` skipped it (the planner's fit check), when it has no records

    @property
    def random(self) -> bool:
        return self.cell.model.weights == "random"

    @property
    def outcome(self) -> tuple[str, str]:
        """(status, phase): the first phase that is missing or not ok; ("ok", "") when both are."""
        phases = (
            ((Phase.EVAL, self.eval),)
            if self.cell.is_base
            else ((Phase.TRAIN, self.train), (Phase.EVAL, self.eval))
        )
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
            if self.skipped:
                return SKIPPED
            return "not evaluated" if phase == Phase.EVAL and not self.cell.is_base else "not run"
        return "ok" if status == "ok" else f"{STATUS_TEXT[status]} ({phase})"

    def record(self, phase: str) -> RunRecord | None:
        return self.train if phase == Phase.TRAIN else self.eval

    def score(self, task: str, scorer: str) -> dict | None:
        scores = self.eval.scores if self.eval else []
        return next((s for s in scores if s.get("task") == task and s.get("scorer") == scorer), None)

    def local_split(self, task: str) -> bool:
        infos = [d for r in (self.train, self.eval) if r for d in r.data if d.get("task") == task]
        score_flags = [
            s.get("local_split") for s in (self.eval.scores if self.eval else []) if s["task"] == task
        ]
        return any(d.get("local_split") for d in infos) or any(score_flags)


def cell_states(
    cells: list[Cell], records: list[RunRecord], skipped: dict[str, str] | None = None
) -> list[CellState]:
    newest, skipped = latest(records), skipped or {}
    return [
        CellState(
            c, newest.get((c.key, Phase.TRAIN)), newest.get((c.key, Phase.EVAL)), skipped.get(c.key, "")
        )
        for c in cells
    ]


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
        # Seeds and methods keep the matrix's order (a stable sort): a method's seeds stay side by side.
        batch = c.train.batch_per_gpu if swept(c, "batch") and c.train else 0
        return (model_order[c.model.name], not c.is_base, -(c.bits or 0), c.rank or 0, c.gpus, c.eval_bits,
                batch)  # fmt: skip

    out = {}
    for c in sorted(cells, key=order):
        seen = variants[config_key(c)[:3]]
        label = f"{c.model.name} {c.config_label}"
        label += f" · {c.gpus} GPU" if len({g for g, _ in seen}) > 1 else ""
        label += f" · {c.nodes} nodes × {c.gpus_per_node} GPU" if c.nodes > 1 else ""
        label += f" · eval {c.eval_bits}-bit" if len({e for _, e in seen}) > 1 else ""
        label += f" · batch {c.train.batch_per_gpu}" if swept(c, "batch") and c.train else ""
        label += f" · {c.eval.protocol}" if c.eval.protocol != protocols.DEFAULT_PROTOCOL else ""
        label += " (random weights)" if c.model.weights == "random" else ""
        label += f" · seed {c.train.seed}" if swept(c, "seed") and c.train else ""
        label += "".join(f" · {axes.AXES[name].label} {_shown(value)}" for name, value in c.axes
                         if "." in name and value is not None)  # the setting axes it swept (lr, ...)
        label += " · chat prompts" if c.prompt_format == "chat" else ""
        out.setdefault(config_key(c), label)
    return out


def swept(cell: Cell, axis: str) -> bool:
    """Did the cell's matrix sweep this axis (its expansion carried a value for it)?"""
    return any(name == axis and value is not None for name, value in cell.axes)


def _shown(value) -> str:
    if isinstance(value, tuple):
        return ", ".join(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def eval_tasks(cell: Cell) -> tuple[str, ...]:
    sets = training_sets()
    tasks = sets[cell.task].eval_tasks if cell.task in sets else (cell.task,)
    # A protocol may score a task on its source's split (finlora-2024: fiqa_sa_fingpt).
    return tuple(protocols.get(cell.eval.protocol).test_task(t) for t in tasks)


def task_order(task: str) -> int:
    names = list(known_tasks())
    return names.index(task) if task in names else len(names)
