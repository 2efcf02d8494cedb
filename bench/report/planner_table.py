"""The planners' error: predicted vs measured peak GPU memory per cell and phase (its own table), and the
resources table's note on how the predicted times were reached. Pure."""

from __future__ import annotations

from collections import Counter

from bench.core.metrics import METRICS, Metric
from bench.core.records import Phase
from bench.report.model import CellState, Column, Entry, Table, config_key, config_labels

PREDICTED = METRICS["predicted_gpu_gb"]
MEASURED = Metric("measured_gpu_gb", "Measured", "GB/GPU", "gb")
ERROR = Metric("planner_error", "Error", "%", "rate")


def planner_table(states: list[CellState]) -> Table | None:
    labels = config_labels([st.cell for st in states])
    rows = []
    for st in states:
        for phase in (Phase.TRAIN, Phase.EVAL):
            record = st.record(phase)
            if record is None or record.metrics.get("predicted_gpu_gb") is None:
                continue
            rows.append(_row(labels[config_key(st.cell)], st.cell.task, phase, record.metrics))
    if not rows:
        return None
    columns = (Column("Configuration"), Column("Training set"), Column("Phase"),
               Column(PREDICTED.label, "", PREDICTED), Column(MEASURED.label, "", MEASURED),
               Column(ERROR.label, "", ERROR), Column("Basis"))  # fmt: skip
    notes = (
        "Predicted before the cell ran (bench/planning/memory.py from config.json, batch and "
        "sequence length); "
        "measured = the largest per-GPU torch peak allocated (GiB, as torch reports) during the phase.",
        "Error = (predicted − measured) / measured. The prediction uses the longest training rows, so it "
        "is an upper bound for a run that sees only some of them (a short smoke run).",
    )
    return Table("planner", "Memory planner: predicted vs measured", columns, tuple(rows), notes)


def _row(label: str, task: str, phase: str, metrics: dict) -> tuple[Entry, ...]:
    predicted = metrics["predicted_gpu_gb"]
    allocated = metrics.get("gpu_mem_allocated_gb")
    measured = max(allocated) if allocated else None
    if measured:
        error = Entry(f"{100 * (predicted - measured) / measured:+.0f}", (predicted - measured) / measured)
    else:
        error = Entry("n/a", status="none", note=metrics.get("gpu_mem_null_reason") or "")
    shown = Entry(MEASURED.format(measured), measured) if measured else Entry("n/a (CPU)", status="none")
    return (Entry(label), Entry(task), Entry(phase), Entry(PREDICTED.format(predicted), predicted), shown,
            error, Entry(metrics.get("predicted_basis", "")))  # fmt: skip


def time_notes(states: list[CellState]) -> tuple[str, ...]:
    """How the predicted times were reached; nothing for records from before the time planner."""
    bases = Counter(
        r.metrics["predicted_time_basis"] for st in states for r in (st.train, st.eval)
        if r and r.metrics.get("predicted_time_basis")
    )  # fmt: skip
    if not bases:
        return ()
    return (
        "Predicted times: bench.planning.timing's forecast when the record was written, from the model "
        "FLOPs of the phase (bench.core.flops, the task data's rows and lengths), the device's peak and "
        "an MFU calibrated from the store's earlier records on the same device class.",
        *(f"Predicted: {basis} ({n} record{'s' * (n > 1)})." for basis, n in bases.items()),
    )
