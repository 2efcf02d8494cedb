"""The peak a device can reach at the precision a run computes in: a table of vendor figures for GPUs,
and for CPUs the key under which a measured matmul peak is cached (bench.workers.peak_probe measures it).

GPU figures are NVIDIA datasheet numbers for dense math (the datasheets print the 2:4-sparsity figure
first, twice these; it does not apply to training). bf16/fp16 are tensor-core figures with fp32
accumulation, what torch uses. Keyed by the name torch.cuda.get_device_name / NVML reports.
Pure (no torch).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

TERA = 1e12


@dataclass(frozen=True)
class GpuPeaks:
    name: str  # what the report says: "H100 SXM"
    pattern: str  # a regex on the reported device name
    tflops: dict[str, float]  # precision -> dense TFLOP/s
    source: str


# Most specific first: "H100 NVL" before "H100", "L40S" before "L4", "A100" before "A10".
GPU_PEAKS = (
    GpuPeaks("H100 NVL", r"H100 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
             "NVIDIA H100 datasheet (NVL column)"),
    GpuPeaks("H100 PCIe", r"H100 PCIe", {"bf16": 756.0, "fp16": 756.0, "tf32": 378.0, "fp32": 51.0},
             "NVIDIA H100 datasheet (PCIe column)"),
    # torch reports the SXM part as "NVIDIA H100 80GB HBM3"
    GpuPeaks("H100 SXM", r"H100", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0},
             "NVIDIA H100 datasheet (SXM column)"),
    GpuPeaks("H200 NVL", r"H200 NVL", {"bf16": 835.5, "fp16": 835.5, "tf32": 417.5, "fp32": 60.0},
             "NVIDIA H200 datasheet (NVL column)"),
    GpuPeaks("H200 SXM", r"H200", {"bf16": 989.4, "fp16": 989.4, "tf32": 494.7, "fp32": 67.0},
             "NVIDIA H200 datasheet (SXM column)"),
    # 40 GB and 80 GB, SXM4 and PCIe: the same peaks
    GpuPeaks("A100", r"A100", {"bf16": 312.0, "fp16": 312.0, "tf32": 156.0, "fp32": 19.5},
             "NVIDIA A100 datasheet"),
    GpuPeaks("L40S", r"L40S", {"bf16": 362.05, "fp16": 362.05, "tf32": 183.0, "fp32": 91.6},
             "NVIDIA L40S datasheet"),
    GpuPeaks("L4", r"\bL4\b", {"bf16": 121.0, "fp16": 121.0, "tf32": 60.0, "fp32": 30.3},
             "NVIDIA L4 datasheet"),
    # The A10G (AWS) has no NVIDIA datasheet and clocks differently: deliberately not matched by A10.
    GpuPeaks("A10", r"\bA10\b", {"bf16": 125.0, "fp16": 125.0, "tf32": 62.5, "fp32": 31.2},
             "NVIDIA A10 datasheet"),
    # Ada whitepaper: fp16/bf16 with fp32 accumulate (fp16 accumulate is twice this; torch does not use it)
    GpuPeaks("RTX 4090", r"RTX 4090", {"bf16": 165.2, "fp16": 165.2, "tf32": 82.6, "fp32": 82.6},
             "NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090)"),
    # Volta has no bf16 (torch emulates it, far below any tensor-core figure)
    GpuPeaks("V100S PCIe", r"V100S", {"fp16": 130.0, "fp32": 16.4}, "NVIDIA V100 datasheet (V100S PCIe)"),
    GpuPeaks("V100 PCIe", r"V100-PCIE", {"fp16": 112.0, "fp32": 14.0}, "NVIDIA V100 datasheet (PCIe)"),
    GpuPeaks("V100 SXM2", r"V100", {"fp16": 125.0, "fp32": 15.7}, "NVIDIA V100 datasheet (SXM2)"),
    GpuPeaks("T4", r"\bT4\b", {"fp16": 65.0, "fp32": 8.1}, "NVIDIA T4 datasheet"),
)  # fmt: skip


@dataclass(frozen=True)
class Peak:
    """A device's peak at one precision, and how bench knows it."""

    flops_per_s: float | None
    source: str  # "table: H100 SXM bf16 dense (NVIDIA H100 datasheet ...)", "probe: ...", or why none


def gpu_peak(device_name: str, precision: str) -> Peak:
    for gpu in GPU_PEAKS:
        if re.search(gpu.pattern, device_name):
            tflops = gpu.tflops.get(precision)
            if tflops is None:
                return Peak(None, f"no {precision} peak in the table for {gpu.name} ({gpu.source})")
            return Peak(tflops * TERA, f"table: {gpu.name} {precision} dense ({gpu.source})")
    return Peak(None, f"no peak known for {device_name!r}: add it to bench.core.peaks.GPU_PEAKS")


# CPU flags that decide how fast a dtype's matmul runs (x86 names as /proc/cpuinfo prints them).
DTYPE_FLAGS = {
    "fp32": ("avx2", "fma", "avx512f"),
    "bf16": ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16"),
    "fp16": ("f16c", "avx512_fp16", "amx_tile", "amx_fp16"),
}


def cpu_probe_key(cpu_model: str, flags: set[str], threads: int, precision: str, torch_version: str) -> dict:
    """What a probed CPU peak depends on; a change of any of it means probing again."""
    relevant = sorted(f for f in DTYPE_FLAGS.get(precision, ()) if f in flags)
    return {"cpu_model": cpu_model, "flags": relevant, "threads": threads, "precision": precision,
            "torch": torch_version}  # fmt: skip


def cache_name(key: dict) -> str:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return f"cpu-{key['precision']}-{key['threads']}t-{digest}.json"


def utilisation(
    flops_per_token: float, tokens_per_s: float, devices: int, peak: Peak
) -> tuple[float, float | None]:
    """(achieved FLOP/s per device, MFU as a fraction of the peak or None without one)."""
    achieved = flops_per_token * tokens_per_s / devices
    return achieved, (achieved / peak.flops_per_s if peak.flops_per_s else None)
