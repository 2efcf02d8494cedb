"""Side-by-side speed of bench's training and evaluation paths against the plain scripts most people write.

(a) training: bench's real worker (bench.orchestration.launch.Launcher on a one-cell matrix:
torchrun + DeepSpeed engine, length-grouped batches) against bench.workers.plain (HF Trainer +
peft QLoRA), with the same model, quantization, LoRA config, examples, batch size, steps
and lr; tokens/s counts the real (non-pad) prompt + target tokens. (b) evaluation: bench's eval
worker (lm-eval, batches by length, the stop rules of tasks/, only new tokens decoded) against
benchmarks/paper_eval.py (the paper's loop), on
the same adapter and rows; both must give identical bench.core.scoring scores.

Every side runs in its own subprocess with the same torch threads; sides alternate order between
repetitions; the table shows medians. One JSON line per run goes to --out.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/speed.py --repeats 5
    .venv/bin/python benchmarks/speed.py --arch medium      # a bigger random Llama (compute-bound)
    .venv/bin/python benchmarks/speed.py --model /path/to/checkpoint --eval-batch 8,32
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: the sibling module
from score_check import score_check  # noqa: E402
from tables import medians, report  # noqa: E402

# Bigger random Llamas for CPUs, where the tiny model is too small for padding to cost much.
ARCHS = {  # hidden, intermediate, layers, heads
    "small": (256, 688, 4, 4),
    "medium": (512, 1376, 4, 8),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny' (bench.models.tiny) or a local model directory")
    p.add_argument("--arch", choices=sorted(ARCHS), help="instead of --model: a random Llama of this size")
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--task", default="fpb")
    p.add_argument("--bits", type=int, default=4, choices=(4, 8, 16))
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train-limit", type=int, default=320)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--plain-padding", default="longest", help="comma list of: longest, max_length")
    p.add_argument("--eval-limit", type=int, default=240)
    p.add_argument("--eval-batch", default="8", help="bench's eval batch sizes, a comma list (e.g. 8,32)")
    p.add_argument("--paper-batch", type=int, default=8)
    p.add_argument("--eval-bits", type=int, default=8, choices=(4, 8, 16))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same for every side")
    p.add_argument("--only", choices=("train", "eval"), help="measure one phase (eval still trains once)")
    p.add_argument("--work", type=Path, help="keep cells and logs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=HERE / "results.jsonl")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("give --data-dir or set BENCH_DATA")
    args.data_dir = Path(args.data_dir).resolve()
    args.eval_batches = [int(b) for b in args.eval_batch.split(",")]
    return args


def model_entry(args, work: Path) -> dict:
    if not args.arch:
        return {"source": args.model if args.model == "tiny" else str(Path(args.model).resolve())}
    arch = work / f"arch-{args.arch}"  # a config.json only: bench's `weights: random` builds the rest
    arch.mkdir(parents=True, exist_ok=True)
    hidden, intermediate, layers, heads = ARCHS[args.arch]
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 8192,
        "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": heads // 2,
        "max_position_embeddings": 4096, "tie_word_embeddings": False,
    }  # fmt: skip
    (arch / "config.json").write_text(json.dumps(config))
    return {"source": str(arch), "weights": "random"}


def speed_cells(args, work: Path) -> list:
    """One cell per bench eval batch size (the batch size is part of a cell); the first one trains."""
    from bench.core.matrix import parse

    raw = {
        "name": "speed",
        "models": {"m": model_entry(args, work)},
        "axes": {
            "model": ["m"],
            "quant": [{"bits": args.bits, "rank": args.rank}],
            "task": [args.task],
            "gpus": [1],
            "eval_bits": [args.eval_bits],
        },
        "train": {
            "max_steps": args.steps,
            "train_limit": args.train_limit,
            "batch_per_gpu": args.batch,
            "max_seq_len": args.max_seq_len,
            "lr": args.lr,
            "optimizer": "adamw",
        },
        "eval": {"limit": args.eval_limit, "batch_size": args.eval_batches[0], "bootstrap": 0},
    }
    (cell,) = parse(raw, work / "speed.yaml").cells
    return [
        dataclasses.replace(cell, eval=dataclasses.replace(cell.eval, batch_size=b))
        for b in args.eval_batches
    ]


def bench_phase(launcher, cell, phase: str) -> dict:
    from bench.orchestration.runner import Step

    record = launcher(Step(cell, phase))
    if record.status != "ok":
        raise SystemExit(f"bench {phase} failed: {record.error}\n{record.log_tail}")
    return record.metrics


def script(name: str, out: Path, *args) -> dict:
    """A script beside this file, or a module (`bench.workers.plain`), with --out; its JSON result."""
    target = ["-m", name] if name.startswith("bench.") else [str(HERE / name)]
    command = [sys.executable, *target, *map(str, args), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{name} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def flags(**values) -> list[str]:
    return [item for k, v in values.items() for item in (f"--{k.replace('_', '-')}", str(v))]


def in_turn(runs: list, rep: int) -> dict:
    """Run every side; who goes first alternates between repetitions (caches, thermal, neighbours)."""
    return {name: run() for name, run in (runs if rep % 2 == 0 else runs[::-1])}


def train_round(args, launcher, cell, source: str, work: Path, rep: int) -> dict:
    common = flags(
        model=source, data_dir=args.data_dir, task=args.task, bits=args.bits, rank=args.rank,
        batch=args.batch, steps=args.steps, lr=args.lr, max_seq_len=args.max_seq_len,
        train_limit=args.train_limit, seed=cell.train.seed,
    )  # fmt: skip
    runs = [("bench", lambda: bench_phase(launcher, cell, "train"))]
    for pad in args.plain_padding.split(","):
        plain = lambda pad=pad: script("bench.workers.plain", work / "plain.json", *common, "--padding", pad)  # noqa: E731
        runs.append((f"plain_{pad}", plain))
    done = in_turn(runs, rep)
    keys = ("train_s", "tokens_per_s", "examples_per_s")
    return {name: {k: m[k] for k in keys} for name, m in done.items()}


def eval_round(args, launcher, cells: list, source: str, work: Path, rep: int) -> tuple[dict, list]:
    from bench.orchestration.runner import Step

    dirs = [launcher.cell_dir(Step(c, "eval")) for c in cells]
    for d in dirs[1:]:  # the same adapter under every eval batch size
        shutil.copytree(dirs[0] / "adapter", d / "adapter", dirs_exist_ok=True)
    paper_args = flags(
        model=source, adapter=dirs[0] / "adapter", data_dir=args.data_dir, task=args.task,
        bits=args.eval_bits, limit=args.eval_limit, batch=args.paper_batch,
        max_new_tokens=cells[0].eval.max_new_tokens or 10,
    )  # fmt: skip
    runs = [(f"bench_b{c.eval.batch_size}", lambda c=c: bench_phase(launcher, c, "eval")) for c in cells]
    runs.append(
        (f"paper_b{args.paper_batch}", lambda: script("paper_eval.py", work / "paper.json", *paper_args))
    )
    done = in_turn(runs, rep)
    paper = done[f"paper_b{args.paper_batch}"]
    checks = [
        {"bench_batch": c.eval.batch_size, **score_check(args.task, d / f"samples_{args.task}.jsonl", paper)}
        for c, d in zip(cells, dirs, strict=True)
    ]
    return {name: {k: m[k] for k in ("eval_s", "examples_per_s")} for name, m in done.items()}, checks


def main(argv=None) -> int:
    args = parse_args(argv)
    # Every side, bench's workers included, inherits these: the same threads for all.
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    os.environ.setdefault("BENCH_CACHE", str(Path(tempfile.gettempdir()) / "bench-speed-cache"))
    import torch

    from bench.models.loading import resolve_source
    from bench.orchestration.launch import Launcher

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-speed-"))
    cells = speed_cells(args, work)
    source = resolve_source(cells[0].model, args.data_dir)  # builds tiny / random weights once, untimed
    launcher = Launcher(work / "results", args.data_dir, "speed", echo=False)
    train_rounds, eval_rounds, checks = [], [], []
    for rep in range(args.repeats):
        if args.only != "eval" or rep == 0:  # evaluation needs one trained adapter
            sides = train_round(args, launcher, cells[0], source, work, rep)
            train_rounds += [sides] if args.only != "eval" else []
        if args.only != "train":
            sides, rep_checks = eval_round(args, launcher, cells, source, work, rep)
            eval_rounds.append(sides)
            checks += rep_checks
        print(f"repetition {rep + 1}/{args.repeats} done", flush=True)
    train, evals = medians(train_rounds), medians(eval_rounds)
    lines, ratios = report(train_rounds, eval_rounds)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu x{os.cpu_count()}"
    print(
        f"\nmedians of {args.repeats} repetitions: model {cells[0].model.source} ({cells[0].model.weights}), "
        f"{args.bits}-bit r{args.rank}, {args.task}, {args.steps} steps x batch {args.batch}, "
        f"eval {args.eval_limit} rows at {args.eval_bits}-bit, torch threads {args.threads}, {device}"
    )
    print("\n".join(lines))
    identical = all(c["scores_identical"] for c in checks)
    if checks:
        last = checks[-1]
        print(
            f"scores identical (bench.core.scoring, both scorers) on the same {last['rows']} rows,"
            f" every batch size and repetition: {identical}; {last['scores']};"
            f" raw generations equal {last['raw_equal']}/{last['rows']}"
        )
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "args": {k: str(v) for k, v in vars(args).items()},
        "host": platform.node(),
        "device": device,
        "torch": torch.__version__,
        "train": train,
        "eval": evals,
        "ratios": ratios,
        "scores_identical": identical,
        "score_checks": checks,
        "rounds": {"train": train_rounds, "eval": eval_rounds},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    raise SystemExit(main())
