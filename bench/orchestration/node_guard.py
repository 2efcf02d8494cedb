"""Kills a step's worker process groups when the Ray worker running the step, or its node's raylet, dies.

Measured on a live host whose raylet was killed: the torchrun tree outlives it, even with
PR_SET_PDEATHSIG on torchrun, and may hold GPUs. A dead machine takes its processes with it; a dead
raylet on a live host does not. This guard runs beside each step as its own session (so a kill aimed
at the Ray worker's process group leaves it standing), polls both pids, and on either death kills the
process groups recorded in the step's pid files (checked against their start time, so a reused pid
is never touched).

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


def kill_tree(pid: int) -> None:
    """SIGKILL the leader's process group and every descendant (collected first: once the leader is
    dead its children are re-parented and can no longer be found from it)."""
    below = descendants(pid)
    for target, kill in [(pid, os.killpg)] + [(p, os.kill) for p in below]:
        try:
            kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kill_recorded(pid_files: list[Path]) -> list[int]:
    killed = []
    for pid_file in pid_files:
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except (OSError, ValueError):
            continue
        if start_time(pid) == started:
            kill_tree(pid)
            killed.append(pid)
    return killed


def alive(pid: int, started: str | None) -> bool:
    """The same process (same start time) and not a zombie waiting to be reaped."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return False
    return fields[0] != "Z" and fields[19] == started


def watch(raylet: int, worker: int, pid_files: list[Path]) -> list[int]:
    """Block until the raylet or the Ray worker is gone; then kill the step's groups."""
    expected = {pid: start_time(pid) for pid in (raylet, worker)}
    while all(alive(pid, started) for pid, started in expected.items()):
        time.sleep(POLL_S)
    return kill_recorded(pid_files)


def main(argv: list[str]) -> int:
    # A Ray worker's children inherit its blocked signals: unblock the one that ends this guard.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the step ended normally: nothing to do
    killed = watch(int(argv[0]), int(argv[1]), [Path(p) for p in argv[2:]])
    if killed:
        print(f"node_guard: raylet or Ray worker died; killed worker groups {killed}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
