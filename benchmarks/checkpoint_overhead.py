"""What training checkpoints cost and what a resume saves, measured with bench's own launcher and worker
(torchrun + DeepSpeed, the same processes `bench run` starts), training phase only.

Per model, trainings of one cell (4-bit r4 on FPB, AdamW), one per side, the sides interleaved: each
repetition runs every side once, in an order rotated by one from the previous repetition's, so that no
side always runs first or last while the load on the shared machine drifts. Sides:
  - none: checkpoint_every 0;
  - tenth: checkpoint_every = a tenth of the run, explicit (bench's default before it was also spaced by
    the checkpoints' own cost, bench.workers.checkpoints.SPACING);
  - default: checkpoint_every unset, bench's default now.
Per checkpointing side, two measures of the overhead, each as its mean over repetitions with a 95%
bootstrap interval (repetitions drawn with replacement): the share of train_s the checkpoints' own wall
time takes (checkpoint_s, timed in the loop around save_checkpoint + manifest + fsync + rename: precise,
but blind to effects on the steps around it), and train_s over the same repetition's `none` train_s,
minus 1 (all of it, and all the step-time noise of a shared machine with it).

With --resume, the 75% resume too: the `tenth` cell (so that step 75% is a checkpoint) again, its rank
SIGKILLed right after step 75% + 1 (BENCH_FAULT), then launched once more: it resumes from the checkpoint
at step 75%. Saved = the last `tenth` training's wall time minus the resumed one's (both include process
start and model load).

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/checkpoint_overhead.py --repeats 3 --resume \
        --out benchmarks/results/checkpoints.jsonl

Each model appends one JSON line (host, load averages before and after, every repetition's numbers, the
summaries) to --out.
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

import numpy as np

from bench.core.matrix import parse
from bench.core.records import Phase
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step
from bench.workers.faults import FAULT_ENV

MODELS = {"tiny": "tiny", "smollm2": "smollm2-135m-instruct"}
SIDES = ("none", "tenth", "default")
LEVEL = 0.95


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--models", default="tiny", help="comma list of: " + ", ".join(MODELS))
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=3, help="repetitions of every side")
    p.add_argument("--sides", default=",".join(SIDES), help="comma list of: " + ", ".join(SIDES))
    p.add_argument("--resume", action="store_true", help="also the 75%% kill and resume")
    p.add_argument("--out", type=Path, help="append one JSON line per model")
    return p.parse_args(argv)


def every_of(side: str, steps: int) -> int | None:
    return {"none": 0, "tenth": math.ceil(steps / 10), "default": None}[side]


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


def interval(values: list[float], seed: int = 0, draws: int = 2000) -> dict:
    """The mean and a percentile-bootstrap interval of it, over repetitions."""
    data = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(draws, len(data)))].mean(axis=1)
    low, high = np.percentile(means, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return {"mean": round(float(data.mean()), 3), "low": round(float(low), 3), "high": round(float(high), 3)}


def repetitions(launcher: Launcher, model: str, args, sides: list[str]) -> list[dict]:
    cells = {side: cell(model, args.steps, args.batch, every_of(side, args.steps)) for side in sides}
    runs = []
    for k in range(args.repeats):
        order = sides[k % len(sides) :] + sides[: k % len(sides)]
        for side in order:
            got = train(launcher, cells[side])
            step = statistics.median(got["step_s"]) if got.get("step_s") else None
            runs.append({"repetition": k, "side": side, "status": got["status"], "wall_s": got["wall_s"],
                         "train_s": got.get("train_s"), "checkpoint_s": got.get("checkpoint_s"),
                         "checkpoints_written": got.get("checkpoints_written"),
                         "median_step_s": step})  # fmt: skip
            print(json.dumps({"model": model, **runs[-1]}), flush=True)
    return runs


def summary(runs: list[dict], sides: list[str]) -> dict:
    by = {(r["repetition"], r["side"]): r for r in runs if r["status"] == "ok"}
    out = {}
    for side in (s for s in sides if s != "none"):
        mine = [r for (_, s), r in sorted(by.items()) if s == side]
        share = [100 * r["checkpoint_s"] / r["train_s"] for r in mine]
        paired = [100 * (r["train_s"] / by[(r["repetition"], "none")]["train_s"] - 1)
                  for r in mine if (r["repetition"], "none") in by]  # fmt: skip
        each = [r["checkpoint_s"] / r["checkpoints_written"] for r in mine if r["checkpoints_written"]]
        out[side] = {
            "checkpoints_written": [r["checkpoints_written"] for r in mine],
            "per_checkpoint_s": round(statistics.median(each), 4) if each else None,
            "checkpoint_share_pct": interval(share) if share else None,
            "train_s_over_none_pct": interval(paired) if paired else None,
        }  # fmt: skip
    steps = [r["median_step_s"] for r in by.values() if r["median_step_s"]]
    out["median_step_s"] = round(statistics.median(steps), 4) if steps else None
    return out


def resume_at_75(launcher: Launcher, model: str, args, scratch: dict) -> dict:
    every = math.ceil(args.steps / 10)
    at_75 = 3 * args.steps // 4
    if 4 * at_75 != 3 * args.steps or at_75 % every:
        raise SystemExit(f"--steps {args.steps}: 75% of it must be a checkpoint (a multiple of {every})")
    the_cell = cell(model, args.steps, args.batch, every)
    killed = train(launcher, the_cell, f"train:sigkill-at-step{at_75 + 1}")
    resumed = train(launcher, the_cell)
    return {
        "killed_status": killed["status"], "resumed_from_step": resumed.get("resumed_from_step"),
        "scratch_wall_s": scratch["wall_s"], "resumed_wall_s": resumed["wall_s"],
        "resume_saved_s": round(scratch["wall_s"] - resumed["wall_s"], 3),
        "resume_saved_pct": round(100 * (scratch["wall_s"] - resumed["wall_s"]) / scratch["wall_s"], 1),
    }  # fmt: skip


def measure(model: str, args, results: Path) -> dict:
    launcher = Launcher(results, args.data_dir.resolve(), "checkpoints", echo=False)
    sides = args.sides.split(",")
    if args.resume and "tenth" not in sides:
        raise SystemExit("--resume compares against the `tenth` side's training: keep it in --sides")
    runs = repetitions(launcher, model, args, sides)
    line = {"model": model, "steps": args.steps, "batch_per_gpu": args.batch, "repeats": args.repeats,
            "level": LEVEL, "summary": summary(runs, sides), "runs": runs}  # fmt: skip
    if args.resume:
        scratch = [r for r in runs if r["side"] == "tenth"][-1]
        line["resume"] = resume_at_75(launcher, model, args, scratch)
    return line


def main(argv=None) -> int:
    args = parse_args(argv)
    for model in args.models.split(","):
        started = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": socket.gethostname(),
                   "load_1m": round(os.getloadavg()[0], 2)}  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="bench-ckpt-") as tmp:
            line = {**started, **measure(model, args, Path(tmp))}
        line["load_1m_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(line))
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(json.dumps(line) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
