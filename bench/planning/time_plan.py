"""`bench plan`'s time columns and the matrix's total: each cell's predicted training and evaluation
time and GPU-hours on the target device (bench.planning.timing), and what the steps still to run add up
to. The target is `--device NAME` (a GPU as torch names it, or "cpu"), else the first visible GPU
(NVML), else this CPU. Pure apart from that NVML call.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.core.cell import Cell
from bench.core.metrics import METRICS
from bench.core.precision import cpu_facts
from bench.core.records import Phase, RunRecord
from bench.planning.calibration import CPU, Target
from bench.planning.timing import PhaseTime, TimePrediction, safe_predict


def visible_gpu_name() -> str | None:
    """The first visible GPU's name through NVML (no torch), as torch reports it; None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception:  # pynvml.NVMLError_LibraryNotFound and friends: no GPU here
        return None
    return name.decode() if isinstance(name, bytes) else name


def plan_target(flag: str | None) -> Target:
    name = flag or visible_gpu_name() or CPU
    # A CPU plan is for this host: its flags say whether its runs compute in bf16 (bench.core.precision).
    return Target(name, frozenset(cpu_facts()[1])) if name == CPU else Target(name)


@dataclass(frozen=True)
class Total:
    seconds: float = 0.0
    gpu_hours: float = 0.0
    unknown: int = 0  # steps without a prediction

    def add(self, part: PhaseTime | None) -> Total:
        if part is None or part.seconds is None:
            return Total(self.seconds, self.gpu_hours, self.unknown + 1)
        return Total(self.seconds + part.seconds, self.gpu_hours + (part.gpu_hours or 0.0), self.unknown)


def predictions(
    cells: Iterable[Cell], data_dir: Path | None, records: list[RunRecord], target: Target
) -> dict[str, TimePrediction]:
    return {cell.key: safe_predict(cell, data_dir, records, target) for cell in cells}


def cell_text(prediction: TimePrediction) -> str:
    """'train 12.3 min (0.205 GPU-h), eval 41.0 s' (— for a base row's training)."""
    return f"train {_part(prediction.train)}, eval {_part(prediction.eval)}"


def _part(part: PhaseTime | None) -> str:
    if part is None:
        return "—"
    if part.seconds is None:
        return "?"
    hours = "" if part.gpu_hours is None else f" ({METRICS['gpu_hours'].format(part.gpu_hours)} GPU-h)"
    return f"{METRICS['train_s'].format(part.seconds)}{hours}"


def total_lines(steps: list, times: dict[str, TimePrediction], target: Target) -> list[str]:
    """The steps still to run, added up; then how each distinct basis was reached (calibrated or not)."""
    total = Total()
    for step in steps:
        prediction = times.get(step.cell.key)
        if prediction is not None:
            total = total.add(prediction.train if step.phase == Phase.TRAIN else prediction.eval)
    gpu = f", {total.gpu_hours:.2f} GPU-hours" if target.kind == "gpu" else " (CPU: no GPU-hours)"
    unknown = f"; {total.unknown} steps without a prediction (see below)" if total.unknown else ""
    lines = [f"predicted total on {target.name}: {METRICS['train_s'].format(total.seconds)}{gpu} "
             f"for {len(steps)} steps{unknown}"]  # fmt: skip
    bases = dict.fromkeys(
        f"{phase}: {part.basis}" for p in times.values()
        for phase, part in ((Phase.TRAIN, p.train), (Phase.EVAL, p.eval)) if part is not None
    )  # fmt: skip
    return lines + [f"  basis {basis}" for basis in bases]
