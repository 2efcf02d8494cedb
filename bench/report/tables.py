"""The report's two main tables: results in the paper's format and resources in its Table 1 shape.

Pure (no torch). Both take the matrix's CellStates; every entry says why it is empty when it is.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from bench.core.metrics import METRICS, RESOURCES, Metric, Phase, shown_in
from bench.report.model import (
    CellState,
    Column,
    Entry,
    Table,
    config_key,
    config_labels,
    eval_tasks,
    task_order,
)
from bench.report.planner_table import time_notes


def result_slots(states: list[CellState]) -> dict[tuple[str, str], dict[tuple, CellState]]:
    """(eval task, adapter's training set or "") -> config -> the cell that fills that slot.

    A task fed by one training set gets one row; by several (fpb alone and the sentiment set),
    one row per set. Base models have no training set, so they fill every row of their task.
    """
    feeds: dict[str, set[str]] = {}
    for st in states:
        for task in eval_tasks(st.cell) if not st.cell.is_base else ():
            feeds.setdefault(task, set()).add(st.cell.task)
    slots: dict[tuple[str, str], dict[tuple, CellState]] = {}
    for st in states:
        for task in eval_tasks(st.cell):
            many = len(feeds.get(task, ())) > 1
            vias = sorted(feeds[task]) if st.cell.is_base and many else [st.cell.task if many else ""]
            for via in vias:
                slot = slots.setdefault((task, via), {})
                held = slot.get(config_key(st.cell))
                # First cell in matrix order wins, unless a later one has results and it has none.
                if held is None or (held.outcome[0] != "ok" and st.outcome[0] == "ok"):
                    slot[config_key(st.cell)] = st
    return dict(sorted(slots.items(), key=lambda kv: (task_order(kv[0][0]), kv[0])))


def score_entries(st: CellState | None, task: str, scorer: str) -> tuple[Entry, Entry]:
    """The accuracy and weighted-F1 entries of one slot: numbers, or why there are none."""
    if st is None:
        return (Entry("—", status="none", note="not in this matrix"),) * 2
    if st.random:
        return (Entry("random weights", status="random", note="resource-only cell: accuracy not shown"),) * 2
    status, phase = st.outcome
    if status != "ok":
        return (Entry(st.label, status=status, note=first_line(st.record(phase))),) * 2
    score = st.score(task, scorer)
    if score is None:
        return (Entry("no score", status="none", note=f"no {scorer} score for {task}"),) * 2
    mark = " †" if st.local_split(task) else ""
    tip = f"{scorer} scorer, n={score.get('n')}, {score.get('decoding')}"
    return tuple(_score_entry(score, key, mark, tip) for key in ("accuracy", "weighted_f1"))


def _score_entry(score: dict, key: str, mark: str, tip: str) -> Entry:
    metric, value, ci = METRICS[key], score.get(key), score.get(f"{key}_ci")
    if value is None:
        return Entry("n/a", status="none", note=f"{key} not defined for this task")
    detail = f"{metric.format(ci[0])}–{metric.format(ci[1])}" if ci else ""
    return Entry(metric.format(value) + mark, value=value, note=tip, detail=detail)


def mark_best(row: list[Entry], positions: list[int], metric: Metric) -> None:
    """Bold the best value among positions in the metric's direction (ties all marked); only when two or
    more compete, and never for a metric without a better direction."""
    values = [row[i].value for i in positions if row[i].status == "ok" and row[i].value is not None]
    best = metric.best(values) if len(values) >= 2 else None
    if best is None:
        return
    for i in positions:
        if row[i].status == "ok" and row[i].value == best:
            row[i] = replace(row[i], best=True)


def results_table(states: list[CellState], scorer: str, primary: bool) -> Table:
    labels = config_labels([st.cell for st in states])
    columns = [Column("Task"), Column("n")]
    for label in labels.values():
        columns += [Column("Acc", label, METRICS["accuracy"]), Column("F1", label, METRICS["weighted_f1"])]
    rows = []
    for (task, via), slot in result_slots(states).items():
        name = f"{task} (adapter: {via})" if via else task
        ns = sorted(
            {s["n"] for st in slot.values() if not st.random and (s := st.score(task, scorer)) and s.get("n")}
        )
        row = [Entry(name, task), n_entry(ns)]
        for key in labels:
            row += score_entries(slot.get(key), task, scorer)
        for offset, key in ((2, "accuracy"), (3, "weighted_f1")):
            mark_best(row, list(range(offset, len(row), 2)), METRICS[key])
        rows.append(tuple(row))
    title = f"Results — {scorer} scorer" + (" (primary)" if primary else "")
    notes = _adapter_notes(states) + (
        f"Scores by the {scorer} scorer. Accuracy in percent, weighted F1 in [0, 1]; "
        "(lo–hi) is the 95% bootstrap interval where the record has one.",
        "Best value per row in bold. † local split, not comparable with the paper.",
        "— not in this matrix; 'random weights' cells measure resources only.",
    )
    return Table(f"results-{scorer}", title, tuple(columns), tuple(rows), notes)


def scorers(states: list[CellState]) -> list[str]:
    """Scorers present in the records, the matrix's configured scorer first."""
    wanted = Counter(st.cell.eval.scorer for st in states).most_common()
    present = {s["scorer"] for st in states if st.eval for s in st.eval.scores}
    ordered = [name for name, _ in wanted] + sorted(present)
    return list(dict.fromkeys(ordered)) or ["finlora"]


def first_line(record) -> str:
    return (record.error or "").strip().splitlines()[0] if record and record.error else ""


def n_entry(ns: list[int]) -> Entry:
    if not ns:
        return Entry("—", status="none")
    if len(ns) == 1:
        return Entry(str(ns[0]), ns[0])
    return Entry(f"{ns[0]}–{ns[-1]}", ns[-1], note="n differs between configurations")


RESOURCE_METRICS = shown_in(RESOURCES)  # the registry's resource columns, in its order


def resources_table(states: list[CellState]) -> Table:
    """One row per configuration × training set: what training and inference cost."""
    labels = config_labels([st.cell for st in states])
    columns = [Column("Configuration"), Column("Training set"), Column("Status"), Column("Batch")]
    columns += [Column(metric.label, "", metric) for metric in RESOURCE_METRICS]
    columns += [Column("Optimizer"), Column("Device")]
    order = {key: i for i, key in enumerate(labels)}
    ordered = sorted(states, key=lambda st: (order[config_key(st.cell)], task_order(eval_tasks(st.cell)[0])))
    rows = tuple(_resource_row(st, labels[config_key(st.cell)]) for st in ordered)
    reasons = Counter(
        st.train.metrics["gpu_mem_null_reason"]
        for st in states
        if st.train
        and st.train.metrics.get("gpu_mem_sum_gb") is None
        and st.train.metrics.get("gpu_mem_null_reason")
    )
    notes = (
        "Peak GPU memory is the sum over GPUs of each GPU's peak allocated memory during training "
        "(the paper's 'GPU memory'); batch = per GPU × GPUs, GA = gradient accumulation steps.",
        "GPU-hours = training wall time × GPUs. Inference = evaluation seconds per example.",
        "Base rows are evaluation only: their training columns show —.",
        *(
            f"GPU memory n/a: {reason} ({n} cell{'s' * (n > 1)}); peak RSS shown instead."
            for reason, n in reasons.items()
        ),
        *_utilisation_notes(states),
        *time_notes(states),
    )
    return Table("resources", "Resources (training and inference cost)", tuple(columns), rows, notes)


def _utilisation_notes(states: list[CellState]) -> tuple[str, ...]:
    """How MFU was computed and which peaks it divides by; nothing for records from before it existed."""
    peaks = Counter(
        st.train.metrics["peak_source"] for st in states if st.train and st.train.metrics.get("peak_source")
    )
    if not peaks:
        return ()
    return (
        "Model FLOPs = matmul FLOPs of a LoRA step on the frozen base per real token (bench.core.flops); "
        "Achieved = that × tokens/s per device; MFU = Achieved ÷ the device's peak at the compute dtype.",
        *(f"Peak: {source} ({n} cell{'s' * (n > 1)})." for source, n in peaks.items()),
    )


def _resource_row(st: CellState, label: str) -> tuple[Entry, ...]:
    status, phase = st.outcome
    train = st.train.metrics if st.train else {}
    row = [
        Entry(label),
        Entry(st.cell.task),
        Entry(st.label, status=status, note=first_line(st.record(phase)) or st.skipped),
    ]
    row.append(_batch_entry(st, train))
    for metric in RESOURCE_METRICS:
        if metric.phase == Phase.EVAL:
            row.append(_metric_entry(metric.key, st.eval.metrics if st.eval else {}))
        else:
            row.append(_resource_entry(st, metric.key, train))
    row.append(_optimizer_entry(train) if train else Entry("—", status="none"))
    metrics = train or (st.eval.metrics if st.eval else {})
    row.append(Entry(_device_text(metrics), metrics.get("device")))
    return tuple(row)


def _resource_entry(st: CellState, key: str, train: dict) -> Entry:
    if st.cell.is_base:
        return Entry("—", status="none", note="base model: not trained")
    if key in ("gpu_mem_sum_gb", "gpu_hours") and train and train.get(key) is None:
        cpu = train.get("device") == "cpu"
        return Entry(
            "n/a (CPU)" if cpu else "n/a", status="none", note=train.get("gpu_mem_null_reason") or ""
        )
    return _metric_entry(key, train)


def _metric_entry(key: str, metrics: dict) -> Entry:
    value = metrics.get(key)
    return Entry("—", status="none") if value is None else Entry(METRICS[key].format(value), value)


def _batch_entry(st: CellState, train: dict) -> Entry:
    if st.cell.is_base or st.cell.train is None:
        return Entry("—", status="none")
    per_gpu = train.get("batch_per_gpu", st.cell.train.batch_per_gpu)
    gpus = train.get("world_size", st.cell.gpus)
    accum = train.get("grad_accum", st.cell.train.grad_accum)
    over = f" ({st.cell.nodes} nodes)" if st.cell.nodes > 1 else ""
    return Entry(f"{per_gpu} × {gpus}{over}, GA {accum}", per_gpu * gpus * accum)


def _optimizer_entry(train: dict) -> Entry:
    used, fallback = train.get("optimizer"), train.get("optimizer_fallback")
    if not used:
        return Entry("—", status="none")
    return Entry(f"{used} (fallback)" if fallback else used, used, note=fallback or "")


def _device_text(metrics: dict) -> str:
    devices = metrics.get("devices") or ([metrics["device"]] if metrics.get("device") else [])
    if not devices:
        return "—"
    names = Counter(devices)
    return ", ".join(f"{n}× {name}" if n > 1 else name for name, n in names.items()).replace("cpu", "CPU")


def _adapter_notes(states: list[CellState]) -> tuple[str, ...]:
    """Say which tasks were scored with an adapter trained on a multi-task set (XBRL in the paper)."""
    shared: dict[str, list[str]] = {}
    for st in states:
        if not st.cell.is_base and eval_tasks(st.cell) != (st.cell.task,):
            shared.setdefault(st.cell.task, list(eval_tasks(st.cell)))
    return tuple(
        f"{', '.join(tasks)}: one adapter trained on the multi-task set '{name}'."
        for name, tasks in shared.items()
    )
