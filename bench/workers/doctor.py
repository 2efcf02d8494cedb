"""What this machine can run, before a long job: GPUs, CUDA, bitsandbytes, 0/1 Adam, disk, data."""

from __future__ import annotations

import shutil
from pathlib import Path

from bench.planning.fit import visible_gpu_gb


def report(results_dir: Path, data_dir: Path | None) -> list[tuple[str, str]]:
    import torch

    from bench.core.records import package_versions
    from bench.models.loading import compute_precision
    from bench.workers.optim import zero_one_adam_unavailable

    rows = []
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        gpus = ", ".join(f"{n} ({g:.0f} GiB)" for n, g in zip(names, visible_gpu_gb(), strict=False))
        rows += [
            ("GPUs", gpus or ", ".join(names)),
            ("CUDA", f"{torch.version.cuda} (torch {torch.__version__})"),
        ]
        device = torch.device("cuda", 0)
    else:
        rows += [("GPUs", "none: training and evaluation run on the CPU (slow beyond tiny models)")]
        device = torch.device("cpu")
    rows.append(("precision", f"{compute_precision(device).reason} (a cell's default; fp32 pins fp32)"))
    rows.append(("bitsandbytes", _bitsandbytes_backend()))
    reason = zero_one_adam_unavailable(device)
    rows.append(("0/1 Adam", "available" if reason is None else f"no: {reason} (cells fall back to AdamW)"))
    probe = results_dir if results_dir.exists() else Path.cwd()
    rows.append(("disk", f"{shutil.disk_usage(probe).free / 2**30:.1f} GiB free at {probe.resolve()}"))
    rows.append(("data", str(data_dir) if data_dir else "no data directory (set BENCH_DATA or --data-dir)"))
    versions = package_versions()
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in versions.items() if v)))
    return rows


def _bitsandbytes_backend() -> str:
    try:
        import bitsandbytes as bnb
    except Exception as exc:  # a broken native library raises more than ImportError
        return f"not importable: {type(exc).__name__}: {exc}"
    import torch

    backend = "CUDA" if torch.cuda.is_available() else "CPU (4-bit and 8-bit layers run on the CPU)"
    return f"{bnb.__version__}, {backend}"
