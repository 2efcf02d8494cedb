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
    """Kill worker groups left by a dead runner; return what was killed (for the console)."""
    killed = []
    for pid_file in Path(results_dir).glob("cells/*/*.pid"):
        try:
            pid_text, started = pid_file.read_text().split()
            pid = int(pid_text)
        except ValueError:
            pid_file.unlink(missing_ok=True)
            continue
        if start_time(pid) == started:
            try:
                os.killpg(pid, signal.SIGKILL)
                killed.append(f"{pid_file.parent.name} {pid_file.stem} (pid {pid})")
            except ProcessLookupError:
                pass
        pid_file.unlink(missing_ok=True)
    return killed
