"""`bench run --executor ray`: each step is a Ray task asking for its cell's GPUs; Ray places it on a node
with free GPUs, so independent cells run at once. Per base model the trainings come first, then one
evaluation task loads the base once for all its cells (as the local executor does).

The driver is the store's only writer: tasks return records. A node that dies mid-step turns that step
into a `failed` record naming the node (Ray reports it within about a second) and the matrix goes on;
`--node-retries N` submits such a step again, and Ray places it on a live node, where a training resumes
from the checkpoint the lost node left in the cell's (shared) folder. The first SIGTERM or Ctrl-C reaches
the steps on every node through a stop file on the shared results folder (preemption.stop_file).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.core.records import RunRecord, Status, environment, now
from bench.core.store import Store
from bench.orchestration.assembly import record_of
from bench.orchestration.cluster import alive_nodes, capacity, check_shared, refusal, resource_of
from bench.orchestration.launch import Launcher
from bench.orchestration.multinode import RankFailed, submit_multinode
from bench.orchestration.on_node import END, driver_env, run_steps
from bench.orchestration.preemption import STOP, stop_file
from bench.orchestration.runner import Recorder, session
from bench.orchestration.scheduler import Step, eval_base, ready_evaluations

WAIT_S = 1.0  # each ray.wait returns after this long at most, so the driver stays responsive (a stop request)


@dataclass
class _Base:
    trainings: list[Step] = field(default_factory=list)
    evaluations: list[Step] = field(default_factory=list)
    waiting: int = 0  # trainings submitted and not finished


class RayExecutor:
    def __init__(self, launcher: Launcher, store: Store, progress=print, node_retries: int = 0):
        self.launcher, self.store, self.progress, self.node_retries = launcher, store, progress, node_retries
        self.pending: dict = {}  # ObjectRef -> handler(value, error)
        self.record = Recorder(store, progress)
        self.env = driver_env()
        self.stopping = False  # the stop file is written

    def run(self, steps: list[Step]) -> list[RunRecord]:
        """Submit every step whose dependencies allow, then handle outcomes as they come. The caller
        holds the results directory's session (runner.session)."""
        import ray

        nodes = alive_nodes()
        self.resource = resource_of(nodes)
        self.nodes = nodes
        runners = [n for n in nodes if self._can_run(n)]
        check_shared(self.launcher.results_dir, self.launcher.data_dir, runners)
        self.progress(self._describe(nodes))
        bases: dict[tuple, _Base] = {}
        for step in steps:
            base = bases.setdefault(eval_base(step), _Base())
            (base.trainings if step.phase == "train" else base.evaluations).append(step)
        for base in bases.values():
            for step in base.trainings:
                self._train(base, step, attempt=0)
            if base.waiting == 0:
                self._evaluate(base, base.evaluations, attempt=0)
        while self.pending:
            if STOP.requested and not self.stopping:
                self._stop_steps()
            ready, _ = ray.wait(list(self.pending), num_returns=1, timeout=WAIT_S)
            for waitable in ready:
                handler = self.pending.pop(waitable, None)
                if handler is None:  # cancelled meanwhile
                    continue
                ref = waitable
                if isinstance(waitable, ray.ObjectRefGenerator):  # a step's next record, or its end
                    try:
                        ref = next(waitable)
                    except StopIteration:
                        handler(END, None)
                        continue
                try:
                    value, error = ray.get(ref, timeout=WAIT_S), None
                except ray.exceptions.RayError as exc:
                    value, error = None, exc
                if error is None and ref is not waitable:
                    self.pending[waitable] = handler  # more records may follow
                handler(value, error)
        if STOP.requested:
            self.progress("stopped on request: the steps not run are left for the next run")
        return self.record.written

    def _stop_steps(self) -> None:
        """The first SIGTERM or Ctrl-C: the running steps, on whichever node, stop their workers (their
        trainings checkpoint and end `preempted`); a step Ray has yet to start runs nothing."""
        path = stop_file(self.launcher.results_dir)
        path.write_text(f"asked by the driver at {now()}\n")
        self.stopping = True
        self.progress(f"asked the steps on the nodes to stop ({path})")

    # -- submission -------------------------------------------------------------------------------

    def _can_run(self, node) -> bool:
        return capacity(node, self.resource) > 0

    def _describe(self, nodes) -> str:
        able = [n for n in nodes if self._can_run(n)]
        sizes = ", ".join(f"{n.name}: {capacity(n, self.resource)}" for n in able)
        return f"ray: {len(able)} nodes that run steps, {self.resource}s per node: {sizes}"

    def _streaming(self, count: int) -> dict:
        return {**self._options(count), "num_returns": "streaming"}

    def _options(self, count: int) -> dict:
        # GPUs are what is scarce; a step asks for no CPU beside them, so CPU counts never block it.
        # max_retries=0: a lost step becomes a record first, then --node-retries decides.
        asks = {"num_gpus": count, "num_cpus": 0} if self.resource == "GPU" else {"num_cpus": count}
        return {**asks, "max_retries": 0, "retry_exceptions": False}

    def _submit(self, function, options: dict, handler: Callable, *args):
        """Submit a task; `handler(value, error)` gets its result (for a streaming task: each record,
        then END) or the Ray error that ended it."""
        import ray

        ref = ray.remote(function).options(**options).remote(*args)
        self.pending[ref] = handler
        return ref

    def _train(self, base: _Base, step: Step, attempt: int) -> None:
        if STOP.requested:  # a retry after a stop request: the next run takes the step up
            return
        if attempt:  # a node was lost: what is left may no longer hold the step
            self.nodes = alive_nodes()
        reason = refusal(step.cell, "train", self.nodes, self.resource)
        if reason:
            self.progress(f"refused train {step.cell.id}: {reason}")
            return
        base.waiting += 1
        self.progress(f"submitted train {step.cell.id}" + (f" (attempt {attempt + 1})" if attempt else ""))
        done = functools.partial(self._trained, base, step, attempt, time.monotonic(), now())
        if step.cell.nodes > 1:
            submit_multinode(self, step, done)
        else:
            streaming = self._streaming(step.cell.gpus)
            self._submit(run_steps, streaming, done, self.launcher, [step], self.env)

    def _trained(self, base, step, attempt, t0, started, value, error) -> None:
        if error is None and value is not END:
            self._emit(value)
            return  # the end of the stream follows
        if error is not None:
            self._emit(self._lost(step, error, started, t0))
            if self._retryable(error) and attempt < self.node_retries:
                base.waiting -= 1
                self._train(base, step, attempt + 1)
                return
        base.waiting -= 1
        if base.waiting == 0:
            self._evaluate(base, base.evaluations, attempt=0)

    def _evaluate(self, base: _Base, steps: list[Step], attempt: int) -> None:
        ready, skipped = ready_evaluations(steps, self.record.last)
        for each in skipped:
            self.progress(f"eval {each.cell.id}: skipped (training did not succeed)")
        if not ready or STOP.requested:
            return
        if attempt:
            self.nodes = alive_nodes()
        reason = refusal(ready[0].cell, "eval", self.nodes, self.resource)
        if reason:
            for step in ready:
                self.progress(f"refused eval {step.cell.id}: {reason}")
            return
        self.progress(f"submitted eval of {len(ready)} cells on one loaded base ({ready[0].cell.model.name})")
        started, t0 = now(), time.monotonic()
        recorded: set[str] = set()

        def done(value, error) -> None:
            if error is None:
                if value is not END:
                    recorded.add(value.cell_key)
                    self._emit(value)
                return
            lost = [s for s in ready if s.cell.key not in recorded]  # the cells it had not finished
            for step in lost:
                self._emit(self._lost(step, error, started, t0))
            if self._retryable(error) and attempt < self.node_retries:
                self._evaluate(base, lost, attempt + 1)

        options = self._streaming(ready[0].cell.gpus_per_node)
        self._submit(run_steps, options, done, self.launcher, ready, self.env)

    # -- records ----------------------------------------------------------------------------------

    def _emit(self, record: RunRecord) -> None:
        where = record.env.get("node", {}).get("node_id", "")[:12]
        self.record(record, f"{record.phase:<5} {record.cell_id}", f" [node {where}]" if where else "")

    def _retryable(self, error: Exception) -> bool:
        import ray

        if isinstance(error, ray.exceptions.RayTaskError):  # raised by bench's code on the node
            return "NodeLost" in str(error)
        return not isinstance(error, RankFailed)

    def _lost(self, step: Step, error: Exception, started: str, t0: float) -> RunRecord:
        """The step's record when its task never returned one: the node died, the Ray worker crashed."""
        log_path = self.launcher.cell_dir(step) / f"{step.phase}.log"
        node = getattr(error, "node", None) or _node_named(str(error))
        return record_of(step, {}, Status.FAILED, cause(error), log_path, started, time.monotonic() - t0,
                         results_dir=self.launcher.results_dir, data_dir=self.launcher.data_dir,
                         matrix=self.launcher.matrix, env={**environment(), "node": node, "driver": True},
                         predicted=False)  # fmt: skip


def cause(error: Exception) -> str:
    """One line: what Ray said happened, with the node it names (NodeDiedError gives IP and id)."""
    text = str(error).strip()
    text = text.split(" This can happen")[0]  # NodeDiedError's advice paragraph
    lines = [line for line in text.splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1] if lines else ''}"[:1000]


def _node_named(text: str) -> dict:
    found = re.search(r"Node IP: ([\w.:]+), node ID: ([0-9a-f]+)", text)
    return {"node_ip": found.group(1), "node_id": found.group(2)} if found else {}


def run_on_ray(launcher: Launcher, store: Store, steps: list[Step], node_retries: int = 0, progress=print):
    """Take the run lock (a second driver refuses before touching Ray), connect (RAY_ADDRESS, or a
    local Ray), run the steps, disconnect. The stop request's handlers go in after ray.init, which sets
    its own SIGTERM handler (sys.exit)."""
    from bench.orchestration.cluster import connect, disconnect

    with session(store, progress, stoppable=False):
        stop_file(launcher.results_dir).unlink(missing_ok=True)  # an earlier run's, stopped: not this one's
        progress(f"executor: {connect()}")
        try:
            with STOP:
                return RayExecutor(launcher, store, progress, node_retries).run(steps)
        finally:
            disconnect()
