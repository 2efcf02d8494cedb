"""Wall clock and memory for workers: torch peaks per GPU, a pynvml sampler per GPU, peak RSS.

pynvml raises NVMLError without a GPU; then GPU fields are null with the reason, and the
process's peak RSS is what the record keeps.
"""

from __future__ import annotations

import resource
import threading
import time

import torch

from bench.core.outcomes import MemoryMetrics

GB = 1024**3


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class Clock:
    """Seconds between start() and stop(), with the GPU's queue drained at both ends."""

    def __enter__(self):
        sync()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        sync()
        self.seconds = time.perf_counter() - self.t0


class NvmlSampler:
    """Samples device-wide used memory of the given CUDA devices in a thread; keeps the peak."""

    def __init__(self, device_indices: list[int], interval_s: float = 0.1):
        self.indices = device_indices
        self.interval = interval_s
        self.peaks = [0] * len(device_indices)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        try:
            import pynvml

            pynvml.nvmlInit()
            uuids = [str(torch.cuda.get_device_properties(i).uuid) for i in self.indices]
            self.handles = [pynvml.nvmlDeviceGetHandleByUUID(_nvml_uuid(u)) for u in uuids]
        except Exception as exc:  # pynvml.NVMLError and its library-not-found cousins
            self.error = f"pynvml unavailable: {type(exc).__name__}: {exc}".strip()
            return self
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self):
        import pynvml

        while not self._stop.is_set():
            for i, handle in enumerate(self.handles):
                self.peaks[i] = max(self.peaks[i], pynvml.nvmlDeviceGetMemoryInfo(handle).used)
            self._stop.wait(self.interval)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def peaks_gb(self) -> list[float] | None:
        return None if self.error else [round(p / GB, 3) for p in self.peaks]


def _nvml_uuid(torch_uuid: str) -> str:
    return torch_uuid if torch_uuid.startswith("GPU-") else f"GPU-{torch_uuid}"


def reset_torch_peaks(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def torch_peaks_gb(device: torch.device) -> tuple[float | None, float | None]:
    if device.type != "cuda":
        return None, None
    return (
        round(torch.cuda.max_memory_allocated(device) / GB, 3),
        round(torch.cuda.max_memory_reserved(device) / GB, 3),
    )


def peak_rss_gb() -> float:
    # ru_maxrss is in KiB on Linux.
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 3)


def memory_fields(
    allocated: list, reserved: list, nvml: list | None, nvml_error: str | None, rss: list
) -> MemoryMetrics:
    """Per-GPU lists plus the paper's figure: torch peak allocated summed over GPUs."""
    on_gpu = all(a is not None for a in allocated) and allocated
    reason = None if on_gpu else (nvml_error or "no CUDA device")
    return MemoryMetrics(
        gpu_mem_allocated_gb=allocated if on_gpu else None,
        gpu_mem_reserved_gb=reserved if on_gpu else None,
        gpu_mem_nvml_gb=nvml if on_gpu else None,
        gpu_mem_sum_gb=round(sum(allocated), 3) if on_gpu else None,
        gpu_mem_null_reason=reason,
        peak_rss_gb=round(sum(rss), 3),
    )


def device_names() -> list[str]:
    if torch.cuda.is_available():
        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return ["cpu"]
