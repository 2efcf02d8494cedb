"""The regression gate's plain-script runs (`bench check --run`): bench.workers.plain in a subprocess with a
trained cell's settings, turned into a RunRecord of phase "plain" whose tokens/s is the denominator of
`train_speed_vs_plain`.
"""

from __future__ import annotations

import socket
import sys
import time
from pathlib import Path

from bench.core.cell import Cell
from bench.core.records import RunRecord, Status, environment, now
from bench.core.store import Store
from bench.gate.check import PLAIN_PHASE, plain_needed
from bench.orchestration.launch import Launcher, classify, read_outcome, tail_of
from bench.orchestration.orphans import kill_leftovers
from bench.orchestration.runner import Step, exclusive_run


def script_flags(cell: Cell, source: str, data_dir: Path, steps: int) -> list[str]:
    """This script's flags for a trained cell: everything of its TrainConfig that the Trainer has."""
    cfg = cell.train
    values = {
        "model": source, "data-dir": data_dir, "task": cell.task, "bits": cell.bits, "rank": cell.rank,
        "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": ",".join(cfg.target_modules),
        "batch": cfg.batch_per_gpu, "grad-accum": cfg.grad_accum, "steps": steps, "lr": cfg.lr,
        "warmup-steps": cfg.warmup_steps, "max-seq-len": cfg.max_seq_len, "seed": cfg.seed,
        "precision": cfg.precision, "method": cfg.method,
    }  # fmt: skip
    if cfg.train_limit is not None:
        values["train-limit"] = cfg.train_limit
    flags = [item for name, value in values.items() for item in (f"--{name}", str(value))]
    return flags + (["--gradient-checkpointing"] if cfg.gradient_checkpointing else [])


def measure(cell: Cell, train: RunRecord, launcher: Launcher) -> RunRecord:
    """Run the plain script on `cell`'s settings for as many optimizer steps as bench's `train` record ran.

    The subprocess is started as bench's workers are (Launcher._run: same environment, hence the same
    torch threads; its own log and pid file; the cell's training time limit), and whatever happens, a
    failure included, becomes a record.
    """
    from bench.models.loading import resolve_source  # imports torch: only here, not for `bench check` alone

    cell_dir = launcher.cell_dir(Step(cell, PLAIN_PHASE))
    cell_dir.mkdir(parents=True, exist_ok=True)
    out_path, log_path = cell_dir / f"{PLAIN_PHASE}-outcome.json", cell_dir / f"{PLAIN_PHASE}.log"
    out_path.unlink(missing_ok=True)
    limit = cell.train.time_limit_s
    steps = int(train.metrics.get("steps") or cell.train.max_steps)
    started, t0 = now(), time.monotonic()
    try:  # after bench's own training this is a cache hit (a packaged or built model) or a path
        source = resolve_source(cell.model, launcher.data_dir)
    except Exception as exc:  # a baseline that cannot start is a failed record, not a crash
        log_path.write_text(f"resolving the model source failed: {type(exc).__name__}: {exc}\n")
        returncode, timed_out = 1, False
    else:
        flags = script_flags(cell, source, launcher.data_dir, steps)
        command = [sys.executable, "-m", "bench.workers.plain", *flags, "--out", str(out_path)]
        returncode, timed_out = launcher.run_process(
            command, log_path, limit, cell_dir / f"{PLAIN_PHASE}.pid"
        )
    metrics = read_outcome(out_path)
    if returncode == 0 and not timed_out and metrics.get("tokens_per_s"):
        status, error = Status.OK, None
    else:
        status, error = classify(returncode, timed_out, {}, log_path, limit)
    return RunRecord(
        cell_key=cell.key,
        cell_id=cell.id,
        cell=cell.to_dict(),
        phase=PLAIN_PHASE,
        status=status,
        started_at=started,
        finished_at=now(),
        wall_s=round(time.monotonic() - t0, 3),
        matrix=launcher.matrix,
        metrics=metrics,
        env=environment(),
        artifacts={"log": str(log_path.relative_to(launcher.results_dir))},
        notes=[
            f"plain HF Trainer + peft script (bench.workers.plain), {steps} steps, for train_speed_vs_plain"
        ],
        error=error,
        log_tail=None if status == Status.OK else tail_of(log_path),
    )


def measure_missing(cells, store: Store, launcher: Launcher, progress=print) -> list[RunRecord]:
    """`bench check --run`'s plain-script runs (check.plain_needed), each appended to the store as it ends.

    Under the results directory's run lock, as `bench run`: no runner works beside it, and a plain run
    left by a killed gate is killed first (its pid file sits in the cell's directory like a worker's).
    """
    written = []
    with exclusive_run(store.root):
        for leftover in kill_leftovers(store.root):
            progress(f"killed a worker left by an interrupted run: {leftover}")
        todo, notes = plain_needed(cells, store.records(), socket.gethostname())
        for note in notes:
            progress(f"note: {note}")
        if todo:
            progress(f"plain-script baseline (HF Trainer + peft, same settings): {len(todo)} trained cells")
        for index, (cell, train) in enumerate(todo, start=1):
            tag = f"[{index}/{len(todo)}] {PLAIN_PHASE:<5} {cell.id}"
            progress(tag)
            record = measure(cell, train, launcher)
            store.append(record)
            written.append(record)
            progress(f"{tag}: {summary(record, train)}")
    return written


def summary(record: RunRecord, train: RunRecord) -> str:
    text = f"{record.status} in {record.wall_s:.0f}s"
    if record.status != Status.OK:
        return f"{text}: {(record.error or 'see log').splitlines()[-1]}"
    m, bench = record.metrics, train.metrics.get("tokens_per_s") or 0
    loss = f"loss {m.get('train_loss_first') or 0:.3f} -> {m.get('train_loss_last') or 0:.3f}"
    speed = f"{m['tokens_per_s']:.0f} tokens/s; bench {bench:.0f}, {bench / m['tokens_per_s']:.2f}x plain"
    return f"{text}, {loss}, {speed}"
