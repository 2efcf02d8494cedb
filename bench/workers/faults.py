"""Deliberate faults for reliability tests: BENCH_FAULT=<phase>:<kind>[@<cell-id part>],...

Kinds: oom (raises torch.OutOfMemoryError, as a GPU would), crash (raises), segfault, sigkill (as the
kernel's OOM killer does), hang; and at a named point of the training (`at`): sigkill-at-step5 (after
optimizer step 5), sigterm-at-step5, sigkill-at-checkpoint4 (checkpoint 4's files written, not yet
renamed into place). `@part` limits a fault to cells whose id contains it. Unset in normal
runs; the workers call `inject(phase, cell_id)` right after start-up.
"""

from __future__ import annotations

import os
import signal
import time

FAULT_ENV = "BENCH_FAULT"


def wanted(phase: str, cell_id: str, spec: str | None = None) -> set[str]:
    kinds = set()
    for item in (spec if spec is not None else os.environ.get(FAULT_ENV, "")).split(","):
        where, _, kind = item.strip().partition(":")
        kind, _, part = kind.partition("@")
        if where == phase and kind and part in cell_id:
            kinds.add(kind)
    return kinds


POINT_SIGNALS = {"sigkill": signal.SIGKILL, "sigterm": signal.SIGTERM}


def at(phase: str, cell_id: str, point: str) -> None:
    for kind in wanted(phase, cell_id):
        action, _, where = kind.partition("-at-")
        if where == point and action in POINT_SIGNALS:
            os.kill(os.getpid(), POINT_SIGNALS[action])


def inject(phase: str, cell_id: str) -> None:
    kinds = wanted(phase, cell_id)
    if "oom" in kinds:
        import torch

        raise torch.OutOfMemoryError(f"{FAULT_ENV}: simulated out-of-memory in {phase}")
    if "crash" in kinds:
        raise RuntimeError(f"{FAULT_ENV}: simulated crash in {phase}")
    for kind, sig in (("segfault", signal.SIGSEGV), ("sigkill", signal.SIGKILL)):
        if kind in kinds:
            os.kill(os.getpid(), sig)
    if "hang" in kinds:
        time.sleep(10**6)
