"""The peak of the device a run trains on, at the dtype it computes in: the vendor table for GPUs
(bench.core.peaks), a matmul probe for CPUs.

A CPU has no datasheet figure bench could trust (clocks, cores lent by a VM, AMX or not), so the peak
is what torch's own matmul reaches on this host with the run's thread count: a few sizes, best of
several repetitions. It is measured once per host and cached under BENCH_CACHE, keyed by what it
depends on (CPU model, the dtype's CPU flags, threads, dtype, torch version), so runs compare against
the same number. A probe taken while other processes compete for the cores reads low: delete the
cached file to measure again.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import torch

from bench.core.peaks import Peak, cache_name, cpu_probe_key, gpu_peak
from bench.core.precision import cpu_facts
from bench.models.model_cache import cache_dir

PRECISIONS = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}
DTYPES = {name: dtype for dtype, name in PRECISIONS.items()}
# (rows, inner, columns): SmolLM2's attention and MLP shapes at one batch of 512 tokens, then larger
# squares where a bigger tile lets the kernel run closer to its peak.
PROBE_SHAPES = ((512, 576, 1536), (512, 1536, 576), (1024, 1024, 1024), (2048, 2048, 2048))
REPEATS = 5
SLOW_S = 1.0  # a single matmul this slow (bf16 on AVX2-only cores): larger shapes are skipped


def device_peak(device: torch.device, dtype: torch.dtype) -> Peak:
    """The peak for this device and compute dtype; for CUDA fp32, tf32 when torch allows it."""
    precision = PRECISIONS[dtype]
    if device.type == "cuda":
        if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
            precision = "tf32"
        return gpu_peak(torch.cuda.get_device_name(device), precision)
    return cpu_peak(precision)


def cpu_peak(precision: str, threads: int | None = None, folder: Path | None = None) -> Peak:
    """The cached probe for this host, or a new probe (one process at a time, under a lock)."""
    threads = threads or torch.get_num_threads()
    model, flags = cpu_facts()
    key = cpu_probe_key(model, flags, threads, precision, torch.__version__)
    folder = folder or cache_dir() / "peaks"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / cache_name(key)
    with open(folder / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel ranks: one probes, the others read its result
        if not path.exists():
            probed = probe(DTYPES[precision], threads)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"key": key, **probed}, indent=1))
            tmp.replace(path)
    found = json.loads(path.read_text())
    m, k, n = found["shape"]
    load = f", load {found['load']:.1f} on {found['cpus']} CPUs" if "load" in found else ""
    source = (
        f"probe: {m}x{k}x{n} {precision} {threads} threads, best of {found['repeats']}{load}, cached {path}"
    )
    return Peak(found["flops_per_s"], source)


def probe(dtype: torch.dtype, threads: int) -> dict:
    """The best FLOP/s of torch.matmul over PROBE_SHAPES at `threads` threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        best, best_shape = 0.0, PROBE_SHAPES[0]
        generator = torch.Generator().manual_seed(0)
        for m, k, n in PROBE_SHAPES:
            a = torch.randn(m, k, generator=generator).to(dtype)
            b = torch.randn(k, n, generator=generator).to(dtype)
            seconds = _timed(a, b)  # warm-up: the first call allocates and picks a kernel
            times = [_timed(a, b) for _ in range(REPEATS if seconds < SLOW_S else 1)]
            rate = 2 * m * k * n / min(times)
            if rate > best:
                best, best_shape = rate, (m, k, n)
            if seconds > SLOW_S:
                break
    finally:
        torch.set_num_threads(before)
    # The 1-minute load average says whether other processes shared the cores: a busy host probes low.
    return {"flops_per_s": best, "shape": best_shape, "repeats": REPEATS, "measured": time.time(),
            "load": os.getloadavg()[0], "cpus": os.cpu_count()}  # fmt: skip


def _timed(a: torch.Tensor, b: torch.Tensor) -> float:
    start = time.perf_counter()
    torch.matmul(a, b)
    return time.perf_counter() - start
