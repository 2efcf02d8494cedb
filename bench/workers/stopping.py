"""A stop request for the training loop: the first SIGTERM (Slurm's preemption signal, a spot notice,
torchrun passing on the runner's) or Ctrl-C makes the loop write a checkpoint at the next step boundary
and end as `preempted`; a second one ends the process at once, as without the handler."""

from __future__ import annotations

import os
import signal

import torch
import torch.distributed as dist

PREEMPTED_EXIT = 75  # a rank that stopped on request after its checkpoint (EX_TEMPFAIL: try again later)


class StopRequest:
    def __init__(self) -> None:
        self.asked = False
        self.group = None

    def install(self) -> None:
        """In every rank, before the loop. Ranks may see the signal at different steps, so they agree on it
        at each step boundary over a gloo group (a CPU collective: no device sync per step)."""
        if dist.get_world_size() > 1:
            self.group = dist.new_group(backend="gloo")
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        if self.asked:  # the second one: die as the default action would
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        self.asked = True
        print(f"progress: {signal.Signals(signum).name}: checkpoint at the next step, then stop", flush=True)

    def agreed(self) -> bool:
        """True on every rank once any rank was asked to stop."""
        if self.group is None:
            return self.asked
        flag = torch.tensor([int(self.asked)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
        return bool(flag.item())
