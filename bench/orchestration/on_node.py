"""What a Ray task runs on the node Ray picked: the same Launcher (and so the same worker processes) as
the local executor, guarded against a dying raylet, returning records to the driver instead of
writing them (the driver is the store's only writer).

Artefacts and logs go to the cell's folder under the results directory, which on a cluster is shared
storage. Ray is imported inside functions only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench.core.records import RunRecord
from bench.orchestration.launch import Launcher
from bench.orchestration.node_guard import alive
from bench.orchestration.orphans import start_time
from bench.orchestration.preemption import STOP, stop_file
from bench.orchestration.scheduler import Step

END = "end of the step's records"  # what the driver's handler gets after a step's last record
STOP_POLL_S = 1.0  # how often a step's task looks for the driver's stop file
# OMP_NUM_THREADS: Ray sets it to a task's CPU count (1 here); the workers get the driver's instead, so that
# both executors give the same numbers. BENCH_FAULT (bench.workers.faults.FAULT_ENV; not imported: that
# module loads torch): the reliability tests' faults reach workers on every node.
DRIVER_SETTINGS = ("OMP_NUM_THREADS", "BENCH_FAULT")


class NodeLost(Exception):
    """The node's raylet died while the step ran (its guard then killed the step's workers): the step
    is lost with its node, not failed by its own doing. The message names the node as Ray's
    NodeDiedError does, so the driver reads both the same way."""


def here() -> dict:
    """The node a record was made on: Ray's node id and address, and the host's name."""
    import ray

    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "node_ip": ray.util.get_node_ip_address(),
        "host": socket.gethostname(),
    }


def run_steps(launcher: Launcher, steps: list[Step], env: dict[str, str | None]) -> Iterator[RunRecord]:
    """One training, or one evaluation group on a base loaded once (as the local executor does). A Ray
    streaming generator: each cell's record goes to the driver the moment it exists, so a group cut
    short (a lost node, a killed driver) keeps the records of the cells it finished. A step that Ray
    starts after the driver was asked to stop runs nothing (no record: the next run takes it up)."""
    if stop_file(launcher.results_dir).exists():
        return
    _driver_env(env)
    node = here()
    made: queue.Queue = queue.Queue()
    finished = object()

    pid_files = [_pid_file(launcher, s, "") for s in steps]

    def work() -> None:
        try:
            with guarded(pid_files, node) as node_alive, stop_on_request(launcher.results_dir):

                def release(record: RunRecord) -> None:
                    # A record made after the raylet died describes workers the guard killed, not
                    # the cell: the step ends as NodeLost (once) instead of also sending it.
                    node_alive()
                    made.put(record)

                if len(steps) == 1:
                    release(launcher(steps[0]))
                else:
                    launcher.group(steps, release)
            made.put(finished)
        except BaseException as exc:  # raised in the driver's handler, as the step's error
            made.put(exc)

    threading.Thread(target=work, daemon=True).start()
    while (item := made.get()) is not finished:
        if isinstance(item, BaseException):
            raise item
        yield dataclasses.replace(item, env={**item.env, "node": node})


@dataclass(frozen=True)
class NodeRankLauncher(Launcher):
    """One node's share of a multi-node training: torchrun with fixed node ranks and the rank-0 node's
    address (no c10d rendezvous: with it ranks follow arrival order and --node-rank is ignored)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    def command(self, step: Step, *cell_dirs: Path) -> list[str]:
        command = super().command(step, *cell_dirs)
        at = command.index("--standalone")
        return [
            *command[:at],
            f"--nnodes={self.nnodes}", f"--node-rank={self.node_rank}",
            f"--master-addr={self.master_addr}", f"--master-port={self.master_port}",
            f"--nproc_per_node={step.cell.gpus_per_node}",
            *command[at + 2 :],
        ]  # fmt: skip

    def _prepare(self, step: Step) -> Path:
        # The driver wrote cell.json before any node started; rewriting it here could let another
        # node's worker read it half-written.
        cell_dir = self.cell_dir(step)
        (cell_dir / f"{step.phase}-outcome.json").unlink(missing_ok=True)
        return cell_dir


def run_node_rank(launcher: NodeRankLauncher, step: Step, env: dict[str, str | None]) -> dict:
    """Node rank 0 returns the cell's record (its worker rank 0 writes the outcome); the other nodes
    return their exit status and log. A failure anywhere shows in rank 0's record."""
    _driver_env(env)
    node = here()
    suffix = "" if launcher.node_rank == 0 else f".node{launcher.node_rank}"
    pid_file = _pid_file(launcher, step, suffix)
    with guarded([pid_file], node) as node_alive, stop_on_request(launcher.results_dir):
        if launcher.node_rank == 0:
            record = launcher(step)
            node_alive()
            return {"node": node, "record": dataclasses.replace(record, env={**record.env, "node": node})}
        cell_dir = launcher.cell_dir(step)
        log_path = cell_dir / f"train{suffix}.log"
        returncode, timed_out = launcher.run_process(
            launcher.command(step, cell_dir), log_path, step.cell.train.time_limit_s,
            cell_dir / f"train{suffix}.pid",
        )  # fmt: skip
        node_alive()
        return {"node": node, "returncode": returncode, "timed_out": timed_out, "log": str(log_path)}


def rendezvous_point() -> dict:
    """Runs in the placement group's first bundle: the address and a free port for torchrun's master."""
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return {"addr": ray.util.get_node_ip_address(), "port": port}


def write_cell_json(cell_dir: Path, step: Step) -> None:
    """Atomically, before a multi-node cell starts: every node's worker reads it."""
    cell_dir.mkdir(parents=True, exist_ok=True)
    tmp = cell_dir / f"cell.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps(step.cell.to_dict(), indent=1, sort_keys=True))
    os.replace(tmp, cell_dir / "cell.json")


def _pid_file(launcher: Launcher, step: Step, suffix: str) -> Path:
    return launcher.cell_dir(step) / f"{step.phase}{suffix}.pid"


@contextmanager
def guarded(pid_files: list[Path], node: dict, raylet: int | None = None) -> Iterator[Callable[[], None]]:
    """A node_guard beside the step: it kills the step's worker groups if this Ray worker or its
    raylet (this worker's parent) dies. Yields a check that raises NodeLost once the raylet is gone:
    call it before handing out a record, since the step's outcome (workers killed) is then not the
    cell's. Checked per record, not on the way out: a record handed out before the raylet died is
    the cell's, and the step must not end in a NodeLost as well."""
    raylet = raylet or os.getppid()  # Ray workers are the raylet's children
    raylet_started = start_time(raylet)
    starter = subprocess.Popen(
        [sys.executable, "-m", "bench.orchestration.node_guard", str(raylet), str(os.getpid()),
         *map(str, pid_files)],
        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True, text=True,
    )  # fmt: skip
    guard = int(starter.stdout.readline())  # the detached guard (not our child: see node_guard.main)
    guard_started = start_time(guard)
    starter.stdout.close()
    starter.wait()

    def node_alive() -> None:
        if not alive(raylet, raylet_started):
            raise NodeLost(
                f"the raylet died while the step ran; its workers were killed. "
                f"Node IP: {node['node_ip']}, node ID: {node['node_id']}."
            )

    try:
        yield node_alive
    finally:
        if start_time(guard) == guard_started:
            os.kill(guard, signal.SIGTERM)


@contextmanager
def stop_on_request(results_dir: Path) -> Iterator[None]:
    """While the step runs, a thread reads the driver's stop file (preemption.stop_file) once a second; once
    it is there, the step's workers are told to stop as the local runner tells its own on a signal
    (SIGTERM to the training's ranks: a checkpoint at the next step boundary, then `preempted`)."""
    ended = threading.Event()

    def poll() -> None:
        while not ended.wait(STOP_POLL_S):
            if not STOP.requested and stop_file(results_dir).exists():
                STOP.request("the driver asked to stop: stopping after the running step's checkpoint")

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        ended.set()
        watcher.join(timeout=5)


def driver_env() -> dict[str, str | None]:
    """The driver's settings its steps' workers get on every node, as under the local executor."""
    return {name: os.environ.get(name) for name in DRIVER_SETTINGS}


def _driver_env(env: dict[str, str | None]) -> None:
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
