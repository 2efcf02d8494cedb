"""The fit check of `bench run`: cells the memory planner predicts cannot fit the visible GPUs are
skipped before anything loads (no record: nothing ran), with the reason; `--force` runs them anyway.

The visible GPUs' memory is read in one place, `visible_gpu_gb` (NVML, no torch); without a GPU
there is nothing to check. Pure apart from that NVML call.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from bench.core.cell import Cell
from bench.planning.planner import does_not_fit, predict

SKIPPED = "skipped: would not fit"


def visible_gpu_gb() -> list[float]:
    """Total memory of each visible GPU through NVML (no torch); [] without a GPU or driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        count = pynvml.nvmlDeviceGetCount()
        totals = [
            pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).total for i in range(count)
        ]
    except Exception:  # pynvml.NVMLError_LibraryNotFound and friends: no GPU here
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and all(v.strip().isdigit() for v in visible.split(",") if v.strip()):
        totals = [totals[int(v)] for v in visible.split(",") if v.strip() and int(v) < len(totals)]
    return [round(t / 2**30, 2) for t in totals]


def unfit(cells: Iterable[Cell], data_dir: Path | None, gpu_gb: list[float]) -> dict[str, str]:
    """cell key -> why it cannot fit (the first phase that cannot: training, then evaluation)."""
    reasons = {}
    for cell in cells:
        prediction = predict(cell, data_dir)
        for phase in cell.phases():
            reason = does_not_fit(prediction, phase, gpu_gb)
            if reason:
                reasons[cell.key] = f"{phase}: {reason}"
                break
    return reasons
