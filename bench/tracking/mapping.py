"""What a record becomes in a tracker, the same for every backend: params, metrics, the loss curve,
tags and artifact files. Read from the record alone; nothing here decides what is recorded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from bench.core.cell import Cell
from bench.core.metrics import METRICS
from bench.core.records import Phase, RunRecord

TRACKED_PHASES = (Phase.TRAIN, Phase.EVAL)  # the gate's speed repetitions are not a cell's result
# Times the registry does not list (it holds the report's columns), kept beside its metrics.
TIMES = ("load_s", "eval_s", "base_load_s", "wall_hours", "examples_per_s")
PER_GPU = ("gpu_mem_allocated_gb", "gpu_mem_reserved_gb", "gpu_mem_nvml_gb")
LOSS = "train/loss"  # the loss curve, one value per optimizer step
TAG = "bench."  # prefix of bench's tags
CELL_KEY_TAG = TAG + "cell_key"
ROLE_TAG = TAG + "role"  # "cell" for a cell's run, "report" for the matrix's report run


@dataclass(frozen=True)
class Artifact:
    path: Path  # a file or a folder under the results directory
    folder: str  # where it goes in the tracker's run: adapter, samples, logs


def params(cell: dict, prefix: str = "") -> dict[str, str]:
    """The cell's settings (Cell.to_dict, the fields of its key) flattened: train.lr, model.source, ..."""
    out: dict[str, str] = {}
    for name, value in cell.items():
        if isinstance(value, dict):
            out.update(params(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = (
                ",".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
            )
    return out


def metrics(record: RunRecord) -> dict[str, float]:
    """Every registry metric the record holds (prefixed by phase: both phases measure memory), its
    times, the memory of each GPU, and for evaluations accuracy and weighted F1 per scorer and task with
    their interval bounds."""
    phase, m = str(record.phase), record.metrics
    out = {f"{phase}/{k}": m[k] for k in (*METRICS, *TIMES) if _number(m.get(k))}
    out[f"{phase}/wall_s"] = record.wall_s
    for key in PER_GPU:
        for i, value in enumerate(m.get(key) or []):
            if _number(value):
                out[f"{phase}/{key}/gpu{i}"] = value
    for score in record.scores:
        for name in ("accuracy", "weighted_f1"):
            where = f"{score['scorer']}/{score['task']}/{name}"
            if _number(score.get(name)):
                out[where] = score[name]
            interval = score.get(f"{name}_ci") or ()
            if len(interval) == 2 and all(_number(v) for v in interval):
                out[f"{where}_ci_low"], out[f"{where}_ci_high"] = interval
    return {k: float(v) for k, v in out.items()}


def loss_curve(record: RunRecord) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in record.metrics.get("loss_curve") or []]


def identity(record: RunRecord) -> str:
    """Which record of its (cell, phase) a run holds: a rerun or --retry gives a new one."""
    return f"{record.status}|{record.started_at}|{record.finished_at}"


def tags(record: RunRecord, status: str) -> dict[str, str]:
    cell = Cell.from_dict(record.cell)
    return {
        CELL_KEY_TAG: record.cell_key,
        TAG + "cell_id": record.cell_id,
        TAG + "matrix": record.matrix,
        TAG + "status": status,
        TAG + "git_sha": str(record.env.get("git_sha")),
        TAG + "host": str(record.env.get("host")),
        TAG + "protocol": cell.eval.protocol,
        ROLE_TAG: "cell",
        f"{TAG}{record.phase}_record": identity(record),
        f"{TAG}{record.phase}_status": str(record.status),
    }


def artifacts(record: RunRecord, results_dir: Path) -> list[Artifact]:
    out = []
    for name, relative in record.artifacts.items():
        path = Path(results_dir) / relative
        if not path.exists():
            continue
        folder = "adapter" if name == "adapter" else "samples" if name.startswith("samples_") else "logs"
        out.append(Artifact(path, folder))
    return out


def _number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
