"""The runner's stop request. The first SIGTERM (Slurm's preemption signal, a spot notice) or Ctrl-C
passes SIGTERM on to the running worker, whose training writes a checkpoint at its next step boundary
and ends as `preempted`; the runner records that and starts no further step. A second signal, or a
worker still running PREEMPT_GRACE_S later, is killed as before (KeyboardInterrupt: the launcher's
`finally` ends the worker's whole tree).

On Ray the driver's steps run on other machines: the driver writes stop_file on the shared results folder,
and each step's task stops its own workers as above when it reads it (bench.orchestration.on_node).

A `preempted` step is not a result: the next `bench run` takes it up (runner.RESUMABLE) and its training
resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

from bench.core.records import Status

PREEMPT_GRACE_S = 90  # a worker told to stop has this long to checkpoint (Slurm: ask --signal ahead of more)
PREEMPTED_EXIT = 75  # `bench run`'s exit status after a stop request (EX_TEMPFAIL: run it again)
SIGNALS = (signal.SIGTERM, signal.SIGINT)
STOP_FILE = ".stop-request"


class StopRequest:
    def __init__(self) -> None:
        self.requested_at: float | None = None
        self.workers: dict[int, bool] = {}  # leader pid -> signal its children (torchrun's ranks) instead
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.requested_at is not None

    def __enter__(self) -> StopRequest:
        self.requested_at = None
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            self._previous = {sig: signal.signal(sig, self._handle) for sig in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        if self.requested:
            self.__exit__()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping now")
        self.request(f"{signal.Signals(signum).name}: stopping after the running step's checkpoint "
                     "(again to stop now)")  # fmt: skip

    def request(self, message: str) -> None:
        """Stop: tell the running workers. From the signal handler, or on a Ray node from the thread that
        reads the driver's stop file (stop_file), where no signal comes."""
        self.requested_at = time.monotonic()
        print(message, flush=True)
        for pid, ranks in list(self.workers.items()):
            self.tell(pid, ranks)

    def watch(self, pid: int, ranks: bool) -> None:
        """A worker started: a stop request reaches it. `ranks`: it is torchrun, whose ranks get the signal
        themselves (torchrun would kill them 30 s after passing it on, which may cut a checkpoint)."""
        self.workers[pid] = ranks
        if self.requested:
            self.tell(pid, ranks)

    def unwatch(self, pid: int) -> None:
        self.workers.pop(pid, None)

    def tell(self, pid: int, ranks: bool) -> None:
        for target in (_children(pid) if ranks else []) or [pid]:
            try:
                os.kill(target, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def overdue(self) -> bool:
        return self.requested and time.monotonic() - self.requested_at > PREEMPT_GRACE_S

    def outcome(self, status: Status, error: str | None) -> tuple[Status, str | None]:
        """A step that did not end ok after a stop request was stopped by it, whatever else it shows."""
        if not self.requested or status in (Status.OK, Status.PREEMPTED):
            return status, error
        return Status.PREEMPTED, f"stopped on request before it finished ({error}); the next run takes it up"


def stop_file(results_dir: Path) -> Path:
    """The Ray driver's stop request to its steps on other machines: a file on the shared results folder
    (which every node of a Ray run must see anyway, cluster.check_shared), read once a second by each
    step's task (on_node.stop_on_request), which then stops its workers as a signal would here. Not
    ray.cancel: a cancelled task's result is a TaskCancelledError, so the step's own `preempted` record
    and the wait for its checkpoint would be lost."""
    return Path(results_dir) / STOP_FILE


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in open(f"/proc/{pid}/task/{pid}/children").read().split()]
    except OSError:
        return []


STOP = StopRequest()  # the process's one: signal handlers are per process
