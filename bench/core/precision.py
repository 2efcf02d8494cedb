"""The dtype a phase computes in, decided in one place from the cell's request and the hardware's facts.

Pure (no torch): the workers pass what torch and /proc/cpuinfo say, the planner what it knows of its
target, tests any flag set they like. A cell's `precision` (train.precision, eval.precision):
  bf16         the default: bf16 where the hardware computes it natively (a GPU; a CPU with avx512_bf16
               or amx_bf16 whose torch has oneDNN bf16 kernels), fp32 elsewhere. On AVX2-only cores bf16
               matmuls are ~75x slower than fp32; on native-bf16 ones 2.25x faster, training 1.48x
               (STACK-NOTES; benchmarks/results/precision.jsonl).
  fp32         fp32 on every device: what the CI gate pins, so its baseline holds on every CPU kind.
  bf16_always  bf16 even where the CPU lacks native bf16 (honoured, with a warning in the record).
Every record says which dtype ran and why: scores and losses differ between the two.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

AUTO, FP32, ALWAYS = "bf16", "fp32", "bf16_always"
PRECISIONS = (AUTO, FP32, ALWAYS)
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo names
SLOW_BF16 = "bf16 matmuls are ~75x slower than fp32 on AVX2-only cores"


@dataclass(frozen=True)
class Precision:
    """What a phase computes in: "bf16" or "fp32", the reason as the record states it, and a warning
    where the cell's request costs far more than fp32 would on this hardware."""

    dtype: str
    reason: str
    warning: str | None = None


def choose(requested: str, device_kind: str, cpu_flags: Iterable[str] = (),
           mkldnn_bf16: bool | None = None) -> Precision:  # fmt: skip
    """The dtype for `requested` (PRECISIONS) on a "cuda" or "cpu" device with these CPU flags.
    mkldnn_bf16: torch.ops.mkldnn._is_mkldnn_bf16_supported() where known (None: trust the flags)."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r} is not one of {', '.join(PRECISIONS)}")
    if requested == FP32:
        return Precision("fp32", "fp32: the cell pins fp32")
    if device_kind == "cuda":
        return Precision("bf16", "bf16: GPU" if requested == AUTO else "bf16: the cell pins bf16_always")
    native = [f for f in NATIVE_BF16_FLAGS if f in set(cpu_flags)]
    lacks = (f"CPU lacks native bf16 (no {' or '.join(NATIVE_BF16_FLAGS)})" if not native else
             f"CPU has {'/'.join(native)} but torch's oneDNN has no bf16 kernels")  # fmt: skip
    if native and mkldnn_bf16 is not False:
        return Precision("bf16", f"bf16: CPU has native bf16 ({'/'.join(native)})")
    if requested == ALWAYS:
        warning = f"bf16 on a CPU without native bf16: {lacks}; {SLOW_BF16}"
        return Precision("bf16", f"bf16: the cell pins bf16_always; {lacks}", warning)
    return Precision("fp32", f"fp32: {lacks}; {SLOW_BF16}")


def cpu_facts() -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU in /proc/cpuinfo; the platform's own name where there is none."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            name, _, value = line.partition(":")
            fields.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    model = fields.get("model name") or platform.processor() or platform.machine()
    return model, set(fields.get("flags", "").split())
