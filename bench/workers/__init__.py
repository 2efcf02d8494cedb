"""The worker processes: training ranks (under torchrun), evaluation, the plain-script baseline.

Every worker the launcher starts (BENCH_WORKER=1 in its environment; not a process that merely
imports a worker module, such as `bench tasks` or a test) dies with the process that started it:
SIGKILL on its parent's death, set here, before torch loads. A training rank whose torchrun is gone
can never finish (it waits on torchrun's store), and torchrun starts each rank in a session of its
own, out of reach of a kill aimed at torchrun's group. Measured under Ray: a driver killed while a
rank was still starting left that rank running, re-parented to init, for minutes.
"""

import ctypes
import os
import signal

PR_SET_PDEATHSIG = 1
WORKER_ENV = "BENCH_WORKER"  # set by bench.orchestration.launch for the processes it starts


def _die_with_parent() -> None:
    parent = os.getppid()
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the launcher's and the node guard's kills remain
        return
    if os.getppid() != parent:  # the parent died before the setting took: nobody will signal us
        os.kill(os.getpid(), signal.SIGKILL)


if os.environ.get(WORKER_ENV) == "1":
    _die_with_parent()
