"""Kills a step's worker process groups when the Ray worker running the step, or its node's raylet, dies,
and whatever is left of them when the step ends.

Measured on a live host whose raylet was killed: the torchrun tree outlives it, even with
PR_SET_PDEATHSIG on torchrun, and may hold GPUs. A dead machine takes its processes with it; a dead
raylet on a live host does not. This guard runs beside each step as its own session (so a kill aimed
at the Ray worker's process group leaves it standing), polls both pids, and on either death kills the
process trees of the leaders recorded in the step's pid files (every process checked against its
start time, so a reused pid is never touched).

    python -m bench.orchestration.node_guard RAYLET_PID WORKER_PID PID_FILE...
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from bench.orchestration.orphans import kill_tree, recorded_tree, start_time

POLL_S = 0.5


def alive(pid: int, started: str | None) -> bool:
    """The same process (same start time) and not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == started


class StandDown(Exception):
    """SIGTERM from the step's own Ray worker: the step has ended."""


def watch(raylet: int, worker: int, pid_files: list[Path]) -> list[int]:
    """Block until the raylet or the Ray worker is gone, or until told to stand down, noting the step's
    process tree meanwhile: by the time the guard acts, torchrun may have died (SIGTERM from its dying
    parent) and left its ranks re-parented, out of reach from its pid. Then kill every process of
    that tree still running. (A rank started less than POLL_S before the end can be missed.)

    Standing down kills too: a step that ended normally has no process left, but a Ray worker being
    shut down (its driver died) kills torchrun, whose return then ends the step on a thread that races
    the worker's exit and stands the guard down while the ranks still run."""
    expected = {pid: start_time(pid) for pid in (raylet, worker)}
    tree: dict[int, tuple[str, bool]] = {}
    try:
        while all(alive(pid, started) for pid, started in expected.items()):
            tree.update(recorded_tree(pid_files))
            time.sleep(POLL_S)
        tree.update(recorded_tree(pid_files))
    except StandDown:
        pass
    return kill_tree(tree)


def _stand_down(*_) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the kill short
    raise StandDown


def main(argv: list[str]) -> int:
    # Detach: a Ray worker that exits SIGKILLs its own children (Ray's kill_child_processes_on_
    # worker_exit), which would take this guard along with torchrun and leave the ranks behind.
    # The parent prints the guard's pid and returns at once; the guard lives on in a session of its own.
    child = os.fork()
    if child:
        print(child, flush=True)
        return 0
    os.setsid()
    # A Ray worker's children inherit its blocked signals: unblock the one that ends this guard.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, _stand_down)
    killed = watch(int(argv[0]), int(argv[1]), [Path(p) for p in argv[2:]])
    if killed:
        print(f"node_guard: killed what was left of the step's processes {killed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
