"""Deliberate faults for reliability tests: BENCH_FAULT=<phase>:<kind>[@<cell-id part>],...

Kinds: oom (raises torch.OutOfMemoryError, as a GPU would), crash (raises), segfault, sigkill (as the
kernel's OOM killer does), hang; and at a named point of the training (`at`): sigkill-at-step5 (after
optimizer step 5), sigterm-at-step5, sigkill-at-checkpoint4 (checkpoint 4's files written, not yet
renamed into place), hang-at-step5 (a first attempt, not a resumed one, stops after optimizer step 5 until a
signal comes: a stalled machine for a test to kill, or to stop, there; the resumed attempt goes on).
`@part` limits a fault to cells whose id contains it. Unset in normal
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
WAKING = (signal.SIGTERM, signal.SIGINT)


def at(phase: str, cell_id: str, point: str, resumed: bool = False) -> None:
    for kind in wanted(phase, cell_id):
        action, _, where = kind.partition("-at-")
        if where == point and action in POINT_SIGNALS:
            os.kill(os.getpid(), POINT_SIGNALS[action])
        if where == point and action == "hang" and not resumed:
            _hang(point)


def _hang(point: str) -> None:
    """Until SIGTERM or SIGINT comes, which then goes to the handler it was meant for (the training's stop
    request); SIGKILL ends it all. Slept in short naps: a signal that another thread of the process took
    runs its Python handler only once this thread is back in the interpreter."""
    print(f"progress: {FAULT_ENV}: hanging at {point} until a signal comes", flush=True)
    came: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: came.append(signum)) for sig in WAKING}
    try:
        while not came:
            time.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    signal.raise_signal(came[0])


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
