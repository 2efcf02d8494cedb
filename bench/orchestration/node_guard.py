"""Kills a step's worker process groups when the Ray worker running the step, or its node's raylet, dies.

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

from bench.orchestration.orphans import start_time

POLL_S = 0.5


def descendants(pid: int) -> list[int]:
    """Every process below `pid`. torchrun starts each rank in a session of its own, so killing the
    leader's process group leaves the ranks running (measured: they then wait for the dead agent)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def recorded_tree(pid_files: list[Path]) -> dict[int, tuple[str, bool]]:
    """The step's processes now: each leader named in a pid file (if its start time still matches)
    and everything below it, as {pid: (start time, is a leader)}."""
    tree: dict[int, tuple[str, bool]] = {}
    for pid_file in pid_files:
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if start_time(pid) != started:
            continue
        tree[pid] = (started, True)
        for below in descendants(pid):
            if (below_started := start_time(below)) is not None:
                tree[below] = (below_started, False)
    return tree


def kill_tree(tree: dict[int, tuple[str, bool]]) -> list[int]:
    """SIGKILL every process of the tree that is still the same process (start time), leaders with
    their process groups."""
    killed = []
    for pid, (started, leader) in tree.items():
        if start_time(pid) != started:
            continue
        try:
            (os.killpg if leader else os.kill)(pid, signal.SIGKILL)
            killed.append(pid)
        except ProcessLookupError:
            pass
    return killed


def alive(pid: int, started: str | None) -> bool:
    """The same process (same start time) and not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == started


def watch(raylet: int, worker: int, pid_files: list[Path]) -> list[int]:
    """Block until the raylet or the Ray worker is gone, noting the step's process tree meanwhile: by
    the time the guard acts, torchrun may have died (SIGTERM from its dying parent) and left its ranks
    re-parented, out of reach from its pid. Then kill every process of that tree. (A rank started
    less than POLL_S before the loss can be missed.)"""
    expected = {pid: start_time(pid) for pid in (raylet, worker)}
    tree: dict[int, tuple[str, bool]] = {}
    while all(alive(pid, started) for pid, started in expected.items()):
        tree.update(recorded_tree(pid_files))
        time.sleep(POLL_S)
    tree.update(recorded_tree(pid_files))
    return kill_tree(tree)


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
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the step ended normally: nothing to do
    killed = watch(int(argv[0]), int(argv[1]), [Path(p) for p in argv[2:]])
    if killed:
        print(f"node_guard: raylet or Ray worker died; killed the step's processes {killed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
