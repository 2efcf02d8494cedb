"""Deliberate faults for reliability tests: BENCH_FAULT=<phase>:<kind>[,<phase>:<kind>...].

Kinds: oom (raises torch.OutOfMemoryError, as a GPU would), crash (raises), segfault, hang.
Unset in normal runs; the workers call `inject(phase)` right after start-up.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "BENCH_FAULT"


def inject(phase: str) -> None:
    wanted = {tuple(item.split(":", 1)) for item in os.environ.get(FAULT_ENV, "").split(",") if ":" in item}
    kinds = {kind for p, kind in wanted if p == phase}
    if "oom" in kinds:
        import torch

        raise torch.OutOfMemoryError(f"{FAULT_ENV}: simulated out-of-memory in {phase}")
    if "crash" in kinds:
        raise RuntimeError(f"{FAULT_ENV}: simulated crash in {phase}")
    if "segfault" in kinds:
        os.kill(os.getpid(), signal.SIGSEGV)
    if "hang" in kinds:
        time.sleep(10**6)
