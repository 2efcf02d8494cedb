"""Where bench's speed comes from: training and evaluation beside the plain scripts, lever by lever.

Training (same model, quantization, LoRA, rows and their seeded order source, lr, steps, warm-up shape
(constant lr), precision and torch threads on every side):
  bench               bench's worker as shipped: logits only at the loss positions, length-grouped batches,
                      the shared instruction computed once per batch where exact (train.prefix_reuse:
                      exact, so not with LoRA dropout)
  bench_all_logits    the same worker with train.loss_logits: all (the model's own full-vocabulary loss)
  bench_random        the same worker with train.batching: random (shuffled rows, padded to the longest)
  bench_no_prefix     the same worker with train.prefix_reuse: off (each row computes its instruction)
  bench_prefix_always the same worker with train.prefix_reuse: always (shared with LoRA dropout too)
  plain_grouped       HF Trainer + peft, train_sampling_strategy="group_by_length", pad to longest
  plain_random        HF Trainer + peft, its random sampler, pad to longest
Each run's per-step wall times and real tokens come back; tokens/s counts the steps after --warmup.
The Trainer's group_by_length sorts megabatches of 50 batches (fewer on small sets) longest first, so
a window shorter than one megabatch times only its longest rows: on all 3,634 FPB rows 12 steps gave it
636 real tokens a step against bench's 468; `--steps 50` times one whole megabatch (481 against 490).

Evaluation (the same adapter and test rows; every side must score identically, bench.core.scoring):
  paper_b{B}          the paper's loop (benchmarks/paper_eval.py): file order, full decode, batch B
  paper_b{B}_sorted   the paper's loop with one lever: batches sorted by prompt length
  paper_b{B}_stop     the paper's loop with one lever: bench's early stop on complete answers
  bench_b{B}          bench's evaluation worker (lm-eval; all its levers) at the same batch B
  bench_b{B}_no_prefix  the same with eval.prefix_reuse: off (every row prefilled whole)
  bench_b{B}_merged   the same with eval.merge_adapter: true (the LoRA merged into the 16-bit base)
  lmeval_b{B}         stock lm-eval's `hf` model (HFLM) with the adapter, on bench's task YAMLs, batch B
                      (benchmarks/lmeval_stock.py): what `lm_eval --model hf --include_path` runs
  bench_b{L}          bench's worker at the larger batch L (--eval-large-batch)
One loaded base for several adapters is measured by benchmarks/eval_reuse.py.
Evaluation runs at 16 bits by default: LLM.int8 picks its fp16 outlier columns from every row of a
batch at once (bitsandbytes' int8_vectorwise_quant, `outliers.any(dim=0)`), so under 8 bits a row's
output depends on its batch neighbours, and the paper's file-order batches and bench's length-sorted
ones need not agree on near-ties (seen: 3 of 16 rows, SmolLM2 with a 4-step adapter).

Sides alternate order between repetitions (ABC, CBA, ...). Every run appends one JSON line with the
host's facts to the committed benchmarks/results/speed.jsonl; `python benchmarks/tables.py` renders
the latest run as the Markdown table the README quotes.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/speed.py          # SmolLM2-135M, both phases
    .venv/bin/python benchmarks/speed.py --phase train --repeats 5 --steps 30
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: the sibling modules
import measured  # noqa: E402
from score_check import score_check  # noqa: E402

BENCH_SIDES = {  # side -> train settings beside the matrix defaults
    "bench": {},
    "bench_all_logits": {"loss_logits": "all"},
    "bench_random": {"batching": "random"},
    "bench_no_prefix": {"prefix_reuse": "off"},
    "bench_prefix_always": {"prefix_reuse": "always"},  # shares with LoRA dropout too (one mask per span)
}
PLAIN_SIDES = {"plain_grouped": "group_by_length", "plain_random": "random"}
TRAIN_SIDES = (*BENCH_SIDES, *PLAIN_SIDES)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m-instruct", help="packaged name, 'tiny' or a directory")
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--task", default="fpb")
    p.add_argument("--phase", choices=("train", "eval", "both"), default="both")
    p.add_argument("--bits", type=int, default=4, choices=(4, 8, 16))
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--warmup", type=int, default=2, help="first steps of every run left out of tokens/s")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--train-limit", type=int, default=320)
    p.add_argument("--max-seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                   help="train.precision on every side: bf16 (bench's default) computes in bf16 where the "
                        "hardware has it natively, fp32 elsewhere; fp32 pins it, as the CI gate does")
    p.add_argument("--lora-dropout", type=float, default=None,
                   help="every side's LoRA dropout (default: bench's, 0.1); 0 lets prefix_reuse: exact share")
    p.add_argument("--train-sides", default=",".join(TRAIN_SIDES), help="comma list of the sides above")
    p.add_argument("--eval-limit", type=int, default=64, help="test rows (FPB has 1212); 0 = all")
    p.add_argument("--eval-batch", type=int, default=8, help="the batch of the like-for-like comparison")
    p.add_argument("--eval-large-batch", type=int, default=32, help="bench's larger batch (0: skip)")
    p.add_argument(
        "--eval-bits", type=int, default=16, choices=(4, 8, 16),
        help="16 by default: under 8-bit (LLM.int8) a row's numbers depend on the rows batched with it",
    )  # fmt: skip
    p.add_argument("--eval-sides", type=lambda v: v.split(","), default=None,
                   help="comma list of evaluation sides (the docstring's names, B filled in); default all")
    p.add_argument("--repeats", type=int, default=3, help="training repetitions")
    p.add_argument("--eval-repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=2, help="torch threads, the same for every side")
    p.add_argument("--work", type=Path, help="keep cells and logs here (default: a temp dir)")
    p.add_argument("--out", type=Path, default=measured.RESULTS, help="JSON lines, appended")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("give --data-dir or set BENCH_DATA")
    args.data_dir = Path(args.data_dir).resolve()
    args.train_sides = args.train_sides.split(",")
    unknown = set(args.train_sides) - set(TRAIN_SIDES)
    if unknown:
        p.error(f"unknown train sides {sorted(unknown)}; use {', '.join(TRAIN_SIDES)}")
    return args


def cell_for(args, work: Path, train: dict, eval_batch: int):
    from bench.core.matrix import parse

    source = args.model if not Path(args.model).exists() else str(Path(args.model).resolve())
    dropout = {} if args.lora_dropout is None else {"lora_dropout": args.lora_dropout}
    raw = {
        "name": "speed",
        "models": {"m": {"source": source}},
        "axes": {"model": ["m"], "quant": [{"bits": args.bits, "rank": args.rank}], "task": [args.task],
                 "gpus": [1], "eval_bits": [args.eval_bits]},
        "train": {"max_steps": args.steps, "train_limit": args.train_limit, "batch_per_gpu": args.batch,
                  "max_seq_len": args.max_seq_len, "lr": args.lr, "optimizer": "adamw",
                  "precision": args.precision, **dropout, **train},
        "eval": {"limit": args.eval_limit or None, "batch_size": eval_batch, "bootstrap": 0},
    }  # fmt: skip
    (cell,) = parse(raw, work / "speed.yaml").cells
    return cell


def bench_step(launcher, cell, phase: str) -> dict:
    from bench.orchestration.runner import Step

    record = launcher(Step(cell, phase))
    if record.status != "ok":
        raise SystemExit(f"bench {phase} ({cell.id}) failed: {record.error}\n{record.log_tail}")
    return record.metrics


def bench_train(launcher, cell) -> dict:
    """bench's training record, with the worker's per-step CPU seconds beside it."""
    from bench.orchestration.runner import Step
    from bench.workers.train import STEPS_FILE

    metrics = bench_step(launcher, cell, "train")
    steps = json.loads((launcher.cell_dir(Step(cell, "train")) / STEPS_FILE).read_text())
    return {**metrics, "step_cpu_s": steps["step_cpu_s"]}


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


def train_runs(args, launcher, source: str, work: Path) -> list[tuple[str, object]]:
    shipped = cell_for(args, work, {}, args.eval_batch)
    common = flags(
        model=source, data_dir=args.data_dir, task=args.task, bits=args.bits, rank=args.rank,
        alpha=shipped.train.lora_alpha, dropout=shipped.train.lora_dropout, batch=args.batch,
        steps=args.steps, lr=args.lr, max_seq_len=args.max_seq_len, train_limit=args.train_limit,
        seed=shipped.train.seed, precision=shipped.train.precision,
    )  # fmt: skip
    runs = []
    for side in args.train_sides:
        if side in BENCH_SIDES:
            cell = cell_for(args, work, BENCH_SIDES[side], args.eval_batch)
            runs.append((side, lambda cell=cell: bench_train(launcher, cell)))
        else:
            extra = ["--sampling", PLAIN_SIDES[side]]
            runs.append(
                (side, lambda e=extra: script("bench.workers.plain", work / "plain.json", *common, *e))
            )
    return runs


def write(args, run_id, phase, side, rep, m, line, host, settings) -> None:
    measured.append({
        "benchmark": "speed", "run_id": run_id, "phase": phase, "side": side, "rep": rep,
        "position": m["position"], "wall_s": m["wall_s"], **line, "settings": settings,
        "host": {**host, "load_avg_1m": m["load_avg_1m"]},
    }, args.out)  # fmt: skip
    shown = {k: line[k] for k in ("tokens_per_s", "examples_per_s") if k in line}
    print(f"{phase} rep {rep + 1} {side}: {json.dumps(shown)}", flush=True)


def train_line(m: dict, warmup: int) -> dict:
    return {
        "tokens_per_s": measured.steady_rate(m["step_s"], m["step_tokens"], warmup),
        "tokens_per_cpu_s": measured.steady_rate(m.get("step_cpu_s") or [], m["step_tokens"], warmup),
        "tokens_per_s_all_steps": m["tokens_per_s"], "train_s": m["train_s"], "steps": m["steps"],
        "warmup_steps": warmup, "step_s": m["step_s"], "step_cpu_s": m.get("step_cpu_s"),
        "step_tokens": m["step_tokens"],
        "step_width": m.get("step_width"), "loss_first": m.get("train_loss_first"),
        "loss_last": m.get("train_loss_last"), "precision": m.get("precision"),
        "sampling": m.get("sampling"), "prefix_reuse": m.get("prefix_reuse"),
        "prefix_shared_batches": m.get("prefix_shared_batches"),
        "prefix_shared_tokens_mean": m.get("prefix_shared_tokens_mean"),
    }  # fmt: skip


def eval_runs(args, launcher, source: str, work: Path) -> list[tuple[str, object]]:
    from bench.orchestration.runner import Step

    shipped = cell_for(args, work, {}, args.eval_batch)
    adapter = launcher.cell_dir(Step(shipped, "eval")) / "adapter"
    if not adapter.exists():
        bench_step(launcher, shipped, "train")  # untimed: the adapter every side evaluates
    b, big = args.eval_batch, args.eval_large_batch
    paper = flags(
        model=source, adapter=adapter, data_dir=args.data_dir, task=args.task, bits=args.eval_bits,
        batch=b, max_new_tokens=shipped.eval.max_new_tokens or 10,
    ) + (flags(limit=args.eval_limit) if args.eval_limit else [])  # fmt: skip
    stock = flags(
        model=source, adapter=adapter, data_dir=args.data_dir, task=args.task, batch=b,
        precision=shipped.eval.precision,
    ) + (flags(limit=args.eval_limit) if args.eval_limit else [])  # fmt: skip
    runs = [
        (f"paper_b{b}", lambda: script("paper_eval.py", work / "paper.json", *paper)),
        (
            f"paper_b{b}_sorted",
            lambda: script("paper_eval.py", work / "paper.json", *paper, "--sort-by-length"),
        ),
        (f"paper_b{b}_stop", lambda: script("paper_eval.py", work / "paper.json", *paper, "--stop-early")),
    ]
    if args.eval_bits == 16:  # HFLM loads the 16-bit base here; its quantized loading is not this script's
        runs.append((f"lmeval_b{b}", lambda: script("lmeval_stock.py", work / "lmeval.json", *stock)))
    variants = [(b, "always", False), (b, "off", False), (b, "always", True)]
    for batch, reuse, merge in variants + ([(big, "always", False)] if big else []):
        settings = dataclasses.replace(
            shipped.eval, batch_size=batch, prefix_reuse=reuse, merge_adapter=merge
        )
        cell = dataclasses.replace(shipped, eval=settings)
        cell_dir = launcher.cell_dir(Step(cell, "eval"))
        if cell.key != shipped.key:  # the same adapter under every batch size
            (cell_dir / "adapter").parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "-r", str(adapter), str(cell_dir)], check=True)
        side = f"bench_b{batch}" + ("_no_prefix" if reuse == "off" else "") + ("_merged" if merge else "")
        runs.append((side, lambda c=cell, d=cell_dir: {**bench_step(launcher, c, "eval"), "dir": d}))
    chosen = [(side, run) for side, run in runs if not args.eval_sides or side in args.eval_sides]
    if f"bench_b{b}" not in dict(chosen):
        raise SystemExit(f"--eval-sides must include bench_b{b}: every other side is checked against it")
    return chosen


def eval_lines(args, done: dict) -> dict:
    """Per side its line; every other side's outputs scored against bench's at the batch B (bench's
    raw generations as the reference for bench's own variants): all must give identical scores."""
    bench_samples = done[f"bench_b{args.eval_batch}"]["dir"] / f"samples_{args.task}.jsonl"
    rows = [json.loads(line) for line in bench_samples.read_text().splitlines()]
    reference = {"outputs": [r["raw"] for r in rows], "targets": [r["target"] for r in rows]}
    lines = {}
    for side, m in done.items():
        line = {"eval_s": m["eval_s"], "examples": m["examples"], "examples_per_s": m["examples_per_s"],
                "prefix_shared_batches": m.get("prefix_shared_batches"),
                "prefix_shared_tokens_mean": m.get("prefix_shared_tokens_mean"),
                "adapter_merged": m.get("adapter_merged"), "precision": m.get("precision")}  # fmt: skip
        if side.startswith(("paper", "lmeval")):
            line["score_check"] = score_check(args.task, bench_samples, m)
        elif side != f"bench_b{args.eval_batch}":
            line["score_check"] = score_check(args.task, m["dir"] / f"samples_{args.task}.jsonl", reference)
        lines[side] = line
    return lines


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    from bench.core.cell import ModelSpec
    from bench.models.loading import resolve_source
    from bench.orchestration.launch import Launcher

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-speed-"))
    source = resolve_source(ModelSpec(name="m", source=args.model), args.data_dir)  # built once, untimed
    launcher = Launcher(work / "results", args.data_dir, "speed", echo=False)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    host = measured.host_facts(args.threads)
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("work", "out", "data_dir")}
    phases = {"train": train_runs, "eval": eval_runs}
    chosen = ["train", "eval"] if args.phase == "both" else [args.phase]
    same_scores = True
    for phase in chosen:
        runs = phases[phase](args, launcher, source, work)
        repeats = args.repeats if phase == "train" else args.eval_repeats
        for rep in range(repeats):
            done, order = {}, runs if rep % 2 == 0 else runs[::-1]
            for position, (side, run) in enumerate(order):
                t0 = time.monotonic()
                done[side] = {**run(), "position": position, "wall_s": round(time.monotonic() - t0, 2),
                              "load_avg_1m": measured.load_avg()}  # fmt: skip
                if phase == "train":  # appended at once: an interrupted run keeps what it finished
                    line = train_line(done[side], args.warmup)
                    write(args, run_id, phase, side, rep, done[side], line, host, settings)
            if phase == "eval":  # after the rep: the score checks need every side's outputs
                for side, line in eval_lines(args, done).items():
                    same_scores &= line.get("score_check", {}).get("scores_identical", True)
                    write(args, run_id, phase, side, rep, done[side], line, host, settings)
    print(f"\nrun {run_id} appended to {args.out}\n")
    import tables

    print(tables.render(measured.read(args.out), run_id))
    return 0 if same_scores else 1


if __name__ == "__main__":
    raise SystemExit(main())
