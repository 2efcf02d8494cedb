"""What training checkpoints cost and what a resume saves, measured with bench's own launcher and worker
(torchrun + DeepSpeed, the same processes `bench run` starts), training phase only.

Per model, trainings of one cell (4-bit r4 on FPB, AdamW):
  - default: checkpoints every tenth of the run (bench's default); the record's checkpoint_s / train_s is
    the overhead (the checkpoints' own wall time, timed inside the loop around save_checkpoint + manifest
    + fsync + rename), beside the median step time;
  - with --without, the same settings with checkpoint_every 0 (a separate cell): train_s without them;
  - resume at 75%: the same cell again, its rank SIGKILLed right after step 75% + 1 (BENCH_FAULT), then
    launched once more: it resumes from the checkpoint at step 75%. Saved = the default (from scratch)
    training step's wall time minus the resumed one's (both include process start and model load).

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/checkpoint_overhead.py \
        --out benchmarks/results/checkpoints.jsonl

Each run appends one JSON line (host, load average, the numbers) to --out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import socket
import statistics
import tempfile
import time
from pathlib import Path

from bench.core.matrix import parse
from bench.core.records import Phase
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step
from bench.workers.faults import FAULT_ENV

MODELS = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--models", default="tiny", help="comma list of: " + ", ".join(MODELS))
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--without", action="store_true", help="also train the cell without checkpoints")
    p.add_argument("--out", type=Path, help="append one JSON line per model")
    return p.parse_args(argv)


def cell(model: str, steps: int, batch: int, checkpoint_every: int | None):
    train = {"max_steps": steps, "train_limit": 256, "batch_per_gpu": batch, "max_seq_len": 128,
             "optimizer": "adamw", "checkpoint_every": checkpoint_every}  # fmt: skip
    matrix = {
        "name": "checkpoints",
        "models": {model: {"source": MODELS[model]}},
        "axes": {"model": [model], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
        "train": train,
    }
    (found,) = parse(matrix, Path("benchmarks/checkpoint_overhead.py")).cells
    return found


def train(launcher: Launcher, the_cell, fault: str = "") -> dict:
    os.environ.pop(FAULT_ENV, None)
    if fault:
        os.environ[FAULT_ENV] = fault
    try:
        record = launcher(Step(the_cell, Phase.TRAIN))
    finally:
        os.environ.pop(FAULT_ENV, None)
    return {"status": str(record.status), "wall_s": record.wall_s, **record.metrics}


def measure(model: str, args, results: Path) -> dict:
    launcher = Launcher(results, args.data_dir.resolve(), "checkpoints", echo=False)
    every = math.ceil(args.steps / 10)  # checkpoints.interval's default
    at_75 = 3 * args.steps // 4
    if 4 * at_75 != 3 * args.steps or at_75 % every:
        raise SystemExit(
            f"--steps {args.steps}: 75% of it must be a checkpoint (a multiple of {every}); try 8 or 16"
        )
    the_cell = cell(model, args.steps, args.batch, None)
    default = train(launcher, the_cell)
    none = train(launcher, cell(model, args.steps, args.batch, 0)) if args.without else {}
    killed = train(launcher, the_cell, f"train:sigkill-at-step{at_75 + 1}")
    resumed = train(launcher, the_cell)
    return {
        "model": model, "steps": args.steps, "batch_per_gpu": args.batch, "checkpoint_every_default": every,
        "checkpoints_written": default.get("checkpoints_written"),
        "checkpoint_s": default.get("checkpoint_s"), "train_s": default.get("train_s"),
        "checkpoint_share_pct": round(100 * default["checkpoint_s"] / default["train_s"], 2),
        "median_step_s": statistics.median(default["step_s"]),
        "train_s_without_checkpoints": none.get("train_s"),
        "scratch_wall_s": default["wall_s"], "killed_status": killed["status"],
        "resumed_from_step": resumed.get("resumed_from_step"), "resumed_wall_s": resumed["wall_s"],
        "resume_saved_s": round(default["wall_s"] - resumed["wall_s"], 3),
        "resume_saved_pct": round(100 * (default["wall_s"] - resumed["wall_s"]) / default["wall_s"], 1),
        "statuses": [r.get("status") for r in (default, none, resumed)],
    }  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    for model in args.models.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
            line = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
                    "load_1m": round(os.getloadavg()[0], 2), **measure(model, args, Path(tmp))}  # fmt: skip
        print(json.dumps(line))
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
