"""What the time planner divides by: the device a plan is for, its peak at the compute precision and the
MFU bench reached on that device class, calibrated from the store's own records. Pure (no torch).

A device class is the name the workers record (`device`: "NVIDIA H100 80GB HBM3", or "cpu") and the
precision the phase computes in. Training records carry `mfu` (bench.core.flops over the device's peak);
an evaluation's utilisation is computed here the same way from its eval_s and examples
(bench.planning.timing.eval_flops). The MFU is the median over the class's records of the same model
and bits where there are any, else of the same bits, else of every record on the class, else a
documented default, and the basis says which. Peaks: the vendor table for GPUs (bench.core.peaks);
for CPUs the peak the class's training records divided by, else the matmul probe cached on this host
(bench.workers.peak_probe writes it).
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.core.peaks import Peak, gpu_peak
from bench.core.precision import choose
from bench.core.records import Phase, RunRecord, Status
from bench.models.model_cache import cache_dir

CPU = "cpu"
# Where no record of the class exists. GPU training: reports/h100's Table 1 run of Llama-3.1-8B 4-bit r8
# at batch 4 reached ~3% of the H100's bf16 peak (dequantizing the base dominates small QLoRA batches),
# 16-bit runs more; CPU training: 58% of the fp32 probe quiet, 11% under load (benchmarks/results/
# mfu-notes.md). Evaluation decodes token by token, bound by memory, not FLOPs: a few percent at most.
DEFAULT_MFU = {(Phase.TRAIN, "gpu"): 0.05, (Phase.TRAIN, CPU): 0.3,
               (Phase.EVAL, "gpu"): 0.01, (Phase.EVAL, CPU): 0.05}  # fmt: skip


@dataclass(frozen=True)
class Target:
    """The device a plan predicts for: its recorded name and, for GPUs, how many a node has."""

    name: str  # as the workers record it: torch's device name, or "cpu"
    # A CPU's /proc/cpuinfo flags (time_plan passes this host's); none = a CPU without native bf16.
    cpu_flags: frozenset[str] = frozenset()

    @property
    def kind(self) -> str:
        return CPU if self.name == CPU else "gpu"

    def precision(self, phase: str, requested: str = "bf16") -> str:
        """The compute precision the workers use there (bench.core.precision.choose decides for both)."""
        return choose(requested, "cpu" if self.kind == CPU else "cuda", self.cpu_flags).dtype


@dataclass(frozen=True)
class Mfu:
    value: float
    basis: str  # "median of 3 records (this model) on cpu fp32", or "default ...: no records on ..."
    calibrated: bool


def record_device(record: RunRecord) -> str | None:
    devices = record.metrics.get("devices") or [record.metrics.get("device")]
    return devices[0] if devices and devices[0] else None


def record_precision(record: RunRecord, target: Target) -> str:
    if record.metrics.get("precision"):  # training records always, evaluation records since they say it
        return "bf16" if str(record.metrics["precision"]).startswith("bf16") else "fp32"
    part = "train" if record.phase == Phase.TRAIN else "eval"
    return target.precision(record.phase, (record.cell.get(part) or {}).get("precision", "bf16"))


def class_records(records: Iterable[RunRecord], target: Target, phase: str, precision: str) -> list:
    """The ok records of `phase` that ran on the target's device class at `precision`."""
    return [r for r in records if r.phase == phase and r.status == Status.OK
            and record_device(r) == target.name and record_precision(r, target) == precision]  # fmt: skip


def calibrated_mfu(
    records: list[RunRecord], target: Target, phase: str, precision: str, model: str, bits: int | None,
    mfu_of: Callable[[RunRecord], float | None],
) -> Mfu:  # fmt: skip
    """The class's median MFU (`mfu_of` each record): the same model at the same bits first (an 8-bit
    step runs far below a 4-bit one on the same device), then the same bits, then any record."""
    where = f"{target.name} {precision}"
    measured = [(r, mfu_of(r)) for r in class_records(records, target, phase, precision)]
    measured = [(r, m) for r, m in measured if m]
    key = "bits" if phase == Phase.TRAIN else "eval_bits"
    same_bits = [(r, m) for r, m in measured if r.cell.get(key) == bits]
    tiers = (
        ([m for r, m in same_bits if r.cell.get("model", {}).get("name") == model], "this model"),
        ([m for _, m in same_bits], "any model"),
        ([m for _, m in measured], "any model, any bits"),
    )
    for values, whose in tiers:
        if values:
            n = len(values)
            basis = f"median of {n} record{'s' * (n > 1)} ({whose}) on {where}"
            return Mfu(statistics.median(values), basis, True)
    default = DEFAULT_MFU[(phase, target.kind)]
    return Mfu(default, f"default {100 * default:g}%: no {phase} records on {where}", False)


def target_peak(target: Target, precision: str, records: list[RunRecord], probes: Path | None = None) -> Peak:
    """The target's peak at `precision`: the GPU table, or for CPUs what its records or the probe cache
    hold (a probe is never started here: `bench plan` loads no torch)."""
    if target.kind == "gpu":
        return gpu_peak(target.name, precision)
    peaks = [r.metrics["peak_flops_per_s"] for r in class_records(records, target, Phase.TRAIN, precision)
             if r.metrics.get("peak_flops_per_s")]  # fmt: skip
    if peaks:
        where = f"median peak of {len(peaks)} training records on cpu {precision}"
        return Peak(statistics.median(peaks), where)
    return cached_cpu_peak(precision, probes or cache_dir() / "peaks")


def cached_cpu_peak(precision: str, folder: Path) -> Peak:
    """The best cached probe of this host's CPU at `precision` (bench.workers.peak_probe's files)."""
    model = _cpu_model()
    found = []
    for path in sorted(folder.glob(f"cpu-{precision}-*.json")):
        try:
            probe = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if probe.get("key", {}).get("cpu_model") == model and probe.get("flops_per_s"):
            found.append((probe["flops_per_s"], path))
    if not found:
        return Peak(None, f"no {precision} peak for this CPU: no training record on cpu and no probe in "
                          f"{folder} (any training run probes it)")  # fmt: skip
    best, path = max(found)
    return Peak(best, f"probe cached {path}")


def _cpu_model() -> str | None:
    """The CPU model as the probe's key names it (bench.workers.peak_probe.cpu_facts reads the same)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return os.uname().machine
    return next((line.partition(":")[2].strip() for line in lines if line.startswith("model name")), None)
