"""The launcher's end of a worker that overruns its time limit: the whole tree goes, ranks included."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.orchestration import launch
from bench.orchestration.launch import Launcher

REPO = Path(__file__).resolve().parents[1]


def test_an_overrun_kills_a_worker_that_ignores_sigterm_and_its_rank_in_a_session_of_its_own(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(launch, "TERM_GRACE_S", 0.5)
    # The leader ignores SIGTERM; its child runs in a session of its own, as torchrun starts its ranks.
    script = "trap '' TERM; setsid sh -c 'echo $$ > rank.pid; exec sleep 60' & while true; do sleep 0.1; done"
    launcher = Launcher(tmp_path, tmp_path, "m", echo=False)
    started = time.monotonic()
    command = ["sh", "-c", f"cd {tmp_path} && {script}"]
    returncode, timed_out = launcher.run_process(command, tmp_path / "w.log", 2, tmp_path / "w.pid")
    assert timed_out and returncode is not None and time.monotonic() - started < 30
    rank = int((tmp_path / "rank.pid").read_text())
    deadline = time.monotonic() + 5
    while _running(rank) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(rank), "the rank outlived its killed worker"


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_dies_with_its_parent_even_when_nobody_kills_it(tmp_path):
    # As a rank under torchrun: in a session of its own, its parent SIGKILLed (nothing passes it on).
    code = "import bench.workers, time; time.sleep(60)"
    script = f"setsid {sys.executable} -c '{code}' & echo $! > {tmp_path}/w.pid; wait"
    parent = subprocess.Popen(["sh", "-c", script], cwd=REPO, env={**os.environ, "BENCH_WORKER": "1"})
    deadline = time.monotonic() + 20
    while not (tmp_path / "w.pid").is_file() or not (tmp_path / "w.pid").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    worker = int((tmp_path / "w.pid").read_text())
    time.sleep(2)  # bench.workers imported: the setting is in place
    assert _running(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while _running(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(worker), "the worker outlived its parent"
