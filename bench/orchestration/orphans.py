"""Worker process groups outlive a runner killed with SIGKILL; these helpers make sure they do not
outlive it for long and never race a rerun of the same cell.

Each worker group's leader pid and start time go into `<cell dir>/<phase>.pid` while it runs. A new
runner (holding the results directory's run lock, so no other runner is alive) kills every group it
finds there whose leader still has the recorded start time: a reused pid is never touched.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """preexec_fn: the worker's leader gets SIGTERM when the runner dies (torchrun then stops its ranks)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:  # not Linux: the pid files below still clean up at the next start
        pass


def start_time(pid: int) -> str | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19]  # field 22 of stat: start time in clock ticks after boot


def remember(pid_file: Path, pid: int) -> None:
    pid_file.write_text(f"{pid} {start_time(pid)}\n")


def kill_leftovers(results_dir: Path) -> list[str]:
    """Kill the worker trees left by a dead runner; return what was killed (for the console).

    The whole tree below each recorded leader, not only its process group: torchrun starts every rank
    in a session of its own, so a SIGKILL of its group alone would leave the ranks running."""
    killed = []
    for pid_file in Path(results_dir).glob("cells/*/*.pid"):
        tree = recorded_tree([pid_file])  # empty when the leader is gone (or its pid was reused)
        if kill_tree(tree):
            leaders = [pid for pid, (_, leader) in tree.items() if leader]
            killed += [f"{pid_file.parent.name} {pid_file.stem} (pid {pid})" for pid in leaders]
        pid_file.unlink(missing_ok=True)
    return killed


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
        if start_time(pid) == started:
            tree.update(tree_of(pid))
    return tree


def tree_of(leader: int) -> dict[int, tuple[str, bool]]:
    """A running leader and everything below it now, as {pid: (start time, is the leader)}."""
    tree = {}
    for pid in (leader, *descendants(leader)):
        if (started := start_time(pid)) is not None:
            tree[pid] = (started, pid == leader)
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
