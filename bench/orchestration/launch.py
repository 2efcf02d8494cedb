"""One subprocess per (cell, phase): torchrun with one process per GPU for training, a single
process for layer-split evaluation, or one evaluation process for a group of cells on the same base
(loaded once). Turns whatever happened into one RunRecord per cell.

Workers write `<phase>-outcome.json` (status, metrics, scores, ...). A worker that dies without
one, overruns its time limit, or runs out of memory still becomes a record, with its log's tail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.outcomes import EVENT_PREFIX, STARTED, outcome_path, read_outcome
from bench.core.records import Phase, RunRecord, Status, now
from bench.orchestration.assembly import record_of, tail_of
from bench.orchestration.orphans import die_with_parent, kill_tree, remember, tree_of
from bench.orchestration.preemption import STOP
from bench.orchestration.scheduler import Step, after_lost_group

PROGRESS_PREFIX = "progress: "
TERM_GRACE_S = 10  # a worker told to stop (SIGTERM) gets this long before SIGKILL
OOM_MARKERS = ("OutOfMemoryError", "CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED")


@dataclass(frozen=True)
class Launcher:
    results_dir: Path
    data_dir: Path
    matrix: str
    echo: bool = True  # print workers' progress lines
    timing_steps: int | None = None  # the gate's speed repetitions (phases speed, plain): steps each
    # gets each progress event a worker prints (bench.orchestration.console's bars); local runs only
    on_event: Callable[[dict], None] | None = field(default=None, compare=False, repr=False)

    def cell_dir(self, step: Step) -> Path:
        return self.results_dir / "cells" / step.cell.dirname

    def command(self, step: Step, *cell_dirs: Path) -> list[str]:
        worker = [*(a for d in cell_dirs for a in ("--cell-dir", str(d))), "--data-dir", str(self.data_dir)]
        if step.phase in (Phase.SPEED, Phase.PLAIN) and self.timing_steps:
            worker += ["--timing-steps", str(self.timing_steps)]
        if step.phase in (Phase.TRAIN, Phase.SPEED):  # speed: bench's training, timed for the gate
            return [
                sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={step.cell.gpus}", "-m", "bench.workers.train", *worker,
            ]  # fmt: skip
        if step.phase == Phase.PLAIN:  # the gate's baseline: HF Trainer + peft on the cell's settings
            return [sys.executable, "-m", "bench.workers.plain", *worker]
        return [sys.executable, "-m", "bench.workers.evaluate", *worker]

    def __call__(self, step: Step) -> RunRecord:
        cell_dir = self._prepare(step)
        log_path = cell_dir / f"{step.phase}.log"
        config = step.cell.eval if step.phase == Phase.EVAL else step.cell.train
        started, t0 = now(), time.monotonic()
        returncode, timed_out = self.run_process(
            self.command(step, cell_dir), log_path, config.time_limit_s, cell_dir / f"{step.phase}.pid"
        )
        outcome = read_outcome(outcome_path(cell_dir, step.phase))
        status, error = STOP.outcome(*classify(returncode, timed_out, outcome, log_path, config.time_limit_s))
        return self._record(step, outcome, status, error, log_path, started, time.monotonic() - t0)

    def group(self, steps: Sequence[Step], emit: Callable[[RunRecord], None]) -> None:
        """Evaluate cells that share a base in one worker, calling `emit` with each cell's record as soon
        as its outcome file appears. If the worker dies or overruns inside a cell, that cell gets the
        failure and the cells it never reached go to a fresh worker; if it dies before any cell
        started (loading the shared base), every cell gets that failure."""
        dirs = [self._prepare(step) for step in steps]
        for d in dirs:
            (d / STARTED).unlink(missing_ok=True)
        log_path = dirs[0] / "eval.log"
        limits = [step.cell.eval.time_limit_s for step in steps]
        limit = None if None in limits else sum(limits)
        started, t0, pending = now(), time.monotonic(), list(range(len(steps)))
        clock = [t0]  # each cell's record gets the wall time since the previous one's

        def collect() -> bool:
            """Emit finished cells; True when the cell in progress overran its own time limit."""
            while pending and outcome_path(dirs[pending[0]], Phase.EVAL).is_file():
                i = pending.pop(0)
                outcome = read_outcome(outcome_path(dirs[i], Phase.EVAL))
                status, error = Status(outcome.get("status", "failed")), outcome.get("error")
                wall, clock[0] = time.monotonic() - clock[0], time.monotonic()
                emit(self._record(steps[i], outcome, status, error, log_path, started, wall))
            return bool(pending) and _overran(dirs[pending[0]] / STARTED, limits[pending[0]])

        returncode, timed_out = self.run_process(
            self.command(steps[0], *dirs), log_path, limit, dirs[0] / "eval.pid", on_tick=collect
        )
        collect()
        if not pending:
            return
        first = pending[0]
        reached = [i for i in pending if (dirs[i] / STARTED).is_file()]
        own_limit = limits[first] if reached and _overran(dirs[first] / STARTED, limits[first]) else limit
        status, error = STOP.outcome(*classify(returncode, timed_out, {}, log_path, own_limit))
        hit, left = after_lost_group(pending, reached)
        for i in hit:
            emit(self._record(steps[i], {}, status, error, log_path, started, time.monotonic() - clock[0]))
        if STOP.requested:  # the cells it never reached have no record: the next run takes them up
            return
        rest = [steps[i] for i in left]
        if len(rest) > 1:
            self.group(rest, emit)
        elif rest:
            emit(self(rest[0]))

    def _prepare(self, step: Step) -> Path:
        cell_dir = self.cell_dir(step)
        cell_dir.mkdir(parents=True, exist_ok=True)
        (cell_dir / "cell.json").write_text(json.dumps(step.cell.to_dict(), indent=1, sort_keys=True))
        outcome_path(cell_dir, step.phase).unlink(missing_ok=True)
        return cell_dir

    def _record(self, step, outcome, status, error, log_path, started, wall) -> RunRecord:
        return record_of(step, outcome, status, error, log_path, started, wall, results_dir=self.results_dir,
                         data_dir=self.data_dir, matrix=self.matrix)  # fmt: skip

    def run_process(
        self, command: list[str], log_path: Path, limit: int | None, pid_file: Path, on_tick=None
    ) -> tuple[int, bool]:
        # BENCH_WORKER: the worker, and each rank torchrun starts, dies with its parent (bench.workers)
        env = {**os.environ, "BENCH_DATA": str(self.data_dir), "PYTHONUNBUFFERED": "1", "BENCH_WORKER": "1"}
        with open(log_path, "w") as log:
            log.write("$ " + " ".join(command) + "\n")
            log.flush()
            # A new session, so that a timeout can end the worker and every process it started.
            proc = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                start_new_session=True, text=True, errors="replace", preexec_fn=die_with_parent,
            )  # fmt: skip
            remember(pid_file, proc.pid)
            STOP.watch(proc.pid, ranks="torch.distributed.run" in command)
            pump = threading.Thread(target=self._pump, args=(proc, log), daemon=True)
            pump.start()
            try:  # a worker told to stop that overruns its grace ends as one over its time limit
                _wait(proc, limit, lambda: STOP.overdue() or bool(on_tick and on_tick()))
                timed_out = False
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                timed_out = True
            finally:
                STOP.unwatch(proc.pid)
                if proc.poll() is None:  # the runner itself is being stopped
                    _kill_group(proc)
            pump.join(timeout=10)
        pid_file.unlink(missing_ok=True)
        return proc.returncode, timed_out

    def _pump(self, proc: subprocess.Popen, log) -> None:
        for line in proc.stdout:
            # One event per training step or evaluation batch: for the console, not the log. It may
            # follow a progress bar's unfinished line (a library's tqdm on stderr, merged here).
            if (at := line.find(EVENT_PREFIX)) >= 0:
                self._forward(line[at:])
                if not line[:at].strip():
                    continue
                line = line[:at] + "\n"
            log.write(line)
            log.flush()
            if self.echo and line.startswith(PROGRESS_PREFIX):
                print("    " + line[len(PROGRESS_PREFIX) :].rstrip(), flush=True)

    def _forward(self, line: str) -> None:
        if self.on_event is None:
            return
        try:
            found = json.loads(line[len(EVENT_PREFIX) :])
        except ValueError:  # a line cut by a dying worker
            return
        self.on_event(found)


def _overran(started_mark: Path, limit: int | None) -> bool:
    try:
        return limit is not None and time.time() - started_mark.stat().st_mtime > limit
    except FileNotFoundError:  # the cell has not started
        return False


def _wait(proc: subprocess.Popen, limit: int | None, on_tick) -> None:
    """proc.wait(limit), calling on_tick about once a second meanwhile (records as cells finish); an
    on_tick that returns True ends the wait as an overrun."""
    if on_tick is None:
        proc.wait(timeout=limit)
        return
    deadline = None if limit is None else time.monotonic() + limit
    while True:
        try:
            proc.wait(timeout=1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))
            return
        except subprocess.TimeoutExpired:
            if deadline is not None and time.monotonic() >= deadline:
                raise
            if on_tick():
                raise


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the worker's group (torchrun passes it on to its ranks), then SIGKILL to the whole
    tree noted before: torchrun starts each rank in a session of its own, out of the group's reach."""
    tree = tree_of(proc.pid)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=TERM_GRACE_S)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    kill_tree(tree)  # what is left of it (each process checked against its start time)
    proc.wait(timeout=10)


def classify(returncode, timed_out, outcome, log_path, limit) -> tuple[Status, str | None]:
    if timed_out:
        return Status.TIMEOUT, f"exceeded the cell's time limit of {limit}s; raise time_limit_s to allow more"
    if outcome.get("status"):
        return Status(outcome["status"]), outcome.get("error")
    tail = tail_of(log_path) or ""
    if any(marker in tail for marker in OOM_MARKERS):
        return Status.OOM, "out of memory (see log tail)"
    if returncode is not None and returncode < 0:
        name = signal.Signals(-returncode).name
        hint = " (the kernel's OOM killer sends SIGKILL)" if returncode == -signal.SIGKILL else ""
        return Status.FAILED, f"worker killed by {name}{hint}"
    return Status.FAILED, f"worker exited with status {returncode} and wrote no outcome (see log tail)"
