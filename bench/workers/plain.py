"""The plain-script baseline: QLoRA fine-tuning the way a competent user writes it with the standard tools
(transformers Trainer + peft + bitsandbytes), nothing from bench's training loop in the timed part.

Same quantization, LoRA config, examples, batch size, optimizer steps, lr, clipping and loss (target
tokens only) as a bench training cell. The examples come from bench.workers.examples.training_pairs so
that both sides see exactly the same rows in the same order of availability; tokenizing, batching
and the loop are the Trainer's own (random sampler, DataCollatorForSeq2Seq padding to the longest
in each batch, or to --max-seq-len with --padding max_length). `--sampling group_by_length` is the
Trainer's LengthGroupedSampler, as QLoRA's reference script turns it on: what a competent user runs.
It is not slower per token: the same CPU seconds per padded token as the random sampler, with about a
quarter less padding on FPB (benchmarks/speed.py; the README's speed section). Its first batch is the
longest row's on purpose (an out-of-memory error comes first), so time steady steps, not the first.

The result also holds per optimizer step: wall seconds (step_s), this process's CPU seconds
(step_cpu_s: a shared machine's load inflates wall time, not these), real tokens and padded width.

    python -m bench.workers.plain --model DIR --data-dir DATA --bits 4 --rank 4 --steps 20 --out r.json

As a worker (`--cell-dir`, how `bench check --run` starts it through the launcher, like bench's own
workers): the cell's settings from its cell.json, --timing-steps optimizer steps (the gate's speed
repetitions; without it as many as bench's training of the cell ran, from its train-outcome.json), and
the result as plain-outcome.json. benchmarks/speed.py runs the command line above.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

from bench.core.methods import METHODS, lora_switches
from bench.core.precision import PRECISIONS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="local model directory")
    source.add_argument("--cell-dir", type=Path, help="a cell's folder: its settings instead of the flags")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--timing-steps", type=int, metavar="N", help="with --cell-dir: N steps (else bench's)")
    p.add_argument("--task", default="fpb")
    p.add_argument("--bits", type=int, choices=(4, 8, 16), default=4)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--alpha", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--targets", default="q_proj,k_proj,v_proj")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--max-seq-len", type=int, default=512)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--method", choices=tuple(METHODS), default="lora", help="LoRA method (peft's switches)")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16", help="as train.precision")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--padding", choices=("longest", "max_length"), default="longest")
    p.add_argument(
        "--sampling", choices=("random", "group_by_length"), default="random",
        help="the Trainer's train_sampling_strategy (group_by_length: its LengthGroupedSampler)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, help="JSON result file (with --model)")
    args = p.parse_args(argv)
    if args.model and args.out is None:
        p.error("--model needs --out")
    return args


def script_flags(cell, source: str, data_dir: Path, steps: int) -> list[str]:
    """This script's flags for a trained cell: everything of its TrainConfig that the Trainer has."""
    cfg = cell.train
    values = {
        "model": source, "data-dir": data_dir, "task": cell.task, "bits": cell.bits, "rank": cell.rank,
        "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": ",".join(cfg.target_modules),
        "batch": cfg.batch_per_gpu, "grad-accum": cfg.grad_accum, "steps": steps, "lr": cfg.lr,
        "warmup-steps": cfg.warmup_steps, "max-seq-len": cfg.max_seq_len, "seed": cfg.seed,
        "precision": cfg.precision, "method": cfg.method,
        # The competent user's Trainer: its length grouping (as QLoRA's script) was the fastest plain
        # configuration measured (benchmarks/results/speed.jsonl), so the gate's ratio is the fair one.
        "sampling": "group_by_length",
    }  # fmt: skip
    if cfg.train_limit is not None:
        values["train-limit"] = cfg.train_limit
    flags = [item for name, value in values.items() for item in (f"--{name}", str(value))]
    return flags + (["--gradient-checkpointing"] if cfg.gradient_checkpointing else [])


def run_cell(cell_dir: Path, data_dir: Path, timing_steps: int | None = None) -> int:
    """The worker: one cell's settings, bench's step count, an outcome file whatever happens."""
    from bench.core.outcomes import Outcome, PlainMetrics, outcome_path, read_outcome
    from bench.core.records import Phase, Status
    from bench.core.task_content import register_cell_tasks
    from bench.models.loading import resolve_source
    from bench.workers.protocol import failure, read_cell, write_outcome

    cell = read_cell(cell_dir)
    trained = read_outcome(outcome_path(cell_dir, Phase.TRAIN)).get("metrics", {})
    try:
        register_cell_tasks(cell.task_files)
        steps = int(timing_steps or trained.get("steps") or cell.train.max_steps or 0)
        if steps <= 0:
            raise ValueError(f"no train-outcome.json with a step count in {cell_dir}: train the cell first")
        source = resolve_source(cell.model, data_dir)  # a cache hit after bench's own training
        args = parse_args([*script_flags(cell, source, data_dir, steps), "--out", "unused"])
        result = train(args)  # the record keeps PlainMetrics' fields; speed.py reads the rest
        known = {f.name for f in dataclasses.fields(PlainMetrics)}
        outcome = Outcome(Status.OK, PlainMetrics(**{k: v for k, v in result.items() if k in known}))
    except Exception as exc:  # a failure is a result: the gate records it
        write_outcome(cell_dir, Phase.PLAIN, failure(exc))
        return 1
    write_outcome(cell_dir, Phase.PLAIN, outcome)
    return 0


def load_model(args, dtype):
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = None
    if args.bits == 4:
        quant = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    elif args.bits == 8:
        quant = BitsAndBytesConfig(load_in_8bit=True)
    device_map = {"": 0} if torch.cuda.is_available() else {"": "cpu"}
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=dtype, quantization_config=quant, device_map=device_map
    )
    model.config.use_cache = False
    checkpointing = args.gradient_checkpointing
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=checkpointing)
    elif checkpointing:
        model.gradient_checkpointing_enable()
    lora = LoraConfig(
        r=args.rank,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=args.targets.split(","),
        bias="none",
        task_type="CAUSAL_LM",
        **lora_switches(args.method),
    )
    return get_peft_model(model, lora)


def tokenized_dataset(args, tokenizer):
    """prompt + target + EOS, labels -100 on the prompt (the usual SFT recipe)."""
    from datasets import Dataset

    from bench.core.catalog import training_set
    from bench.workers.examples import training_pairs

    tasks = training_set(args.task).train_tasks
    pairs = training_pairs(tasks, args.data_dir, args.train_limit, args.seed)

    def tokenize(row):
        prompt = tokenizer(row["prompt"]).input_ids
        target = tokenizer(row["target"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
        prompt = prompt[-max(0, args.max_seq_len - len(target)) :]  # keep the question at the end
        ids = (prompt + target)[: args.max_seq_len]
        labels = ([-100] * len(prompt) + target)[: args.max_seq_len]
        return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}

    rows = Dataset.from_list([{"prompt": p, "target": t} for p, t in pairs])
    return rows.map(tokenize, remove_columns=rows.column_names)


class Counting:
    """Wraps the collator to count each batch's real (non-pad) tokens and examples on the host.

    accelerate's loader fetches one batch ahead, so only the first steps x grad_accum batches count.
    """

    def __init__(self, collator):
        self.collator, self.batches = collator, []

    def __call__(self, features):
        batch = self.collator(features)
        real = sum(len(f["input_ids"]) for f in features)
        self.batches.append((real, len(features), int(batch["input_ids"].shape[1])))
        return batch

    def totals(self, micro_batches: int) -> tuple[int, int]:
        used = self.batches[:micro_batches]
        return sum(b[0] for b in used), sum(b[1] for b in used)

    def per_step(self, steps: int, grad_accum: int) -> tuple[list[int], list[int]]:
        """Per optimizer step: real tokens and padded width (the widest micro-batch of the step)."""
        used = self.batches[: steps * grad_accum]
        groups = [used[i : i + grad_accum] for i in range(0, len(used), grad_accum)]
        return [sum(b[0] for b in g) for g in groups], [max(b[2] for b in g) for g in groups]


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.cell_dir:
        return run_cell(args.cell_dir, args.data_dir, args.timing_steps)
    args.out.write_text(json.dumps(train(args)))
    return 0


def train(args) -> dict:
    """The Trainer run; its timings, token counts and losses (PlainMetrics' fields)."""
    import torch
    from transformers import (
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from bench.models.loading import compute_precision

    on_gpu = torch.cuda.is_available()
    # The dtype bench's own training picks for the same --precision on this device (bench.core.precision:
    # bf16 on GPUs and native-bf16 CPUs, fp32 elsewhere), so the speed gate compares like with like.
    chosen = compute_precision(torch.device("cuda" if on_gpu else "cpu"), args.precision)
    bf16 = chosen.dtype == "bf16"
    dtype = torch.bfloat16 if bf16 else torch.float32
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "right"  # training: positions must start at 0 on every row
    model = load_model(args, dtype)
    dataset = tokenized_dataset(args, tokenizer)
    pad = {"padding": True} if args.padding == "longest" else {"padding": "max_length"}
    collator = Counting(
        DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, max_length=args.max_seq_len, **pad)
    )
    clock = {"step_s": []}

    class Timer(TrainerCallback):  # the loop only: as bench's train_s, which excludes engine setup
        def on_train_begin(self, *a, **k):
            torch.cuda.synchronize() if on_gpu else None
            clock["t0"] = clock["last"] = time.perf_counter()
            clock["cpu"], clock["steps"], clock["cpu_steps"] = time.process_time(), [], []

        def on_step_end(self, *a, **k):  # per step: from the end of the previous one (bench's step_s)
            torch.cuda.synchronize() if on_gpu else None
            now, cpu = time.perf_counter(), time.process_time()
            clock["steps"].append(round(now - clock["last"], 4))
            clock["cpu_steps"].append(round(cpu - clock["cpu"], 4))  # this process's CPU seconds
            clock["last"], clock["cpu"] = now, cpu

        def on_train_end(self, *a, **k):
            torch.cuda.synchronize() if on_gpu else None
            clock["s"] = time.perf_counter() - clock["t0"]

        def on_log(self, _args, state, _control, logs=None, **k):  # bench's launcher echoes these lines
            if logs and "loss" in logs:
                print(f"progress: step {state.global_step}/{state.max_steps} loss {logs['loss']:.4f}")

    with tempfile.TemporaryDirectory() as out_dir:
        training_args = TrainingArguments(
            output_dir=out_dir,
            per_device_train_batch_size=args.batch,
            gradient_accumulation_steps=args.grad_accum,
            max_steps=args.steps,
            learning_rate=args.lr,
            lr_scheduler_type="constant_with_warmup" if args.warmup_steps else "constant",
            warmup_steps=args.warmup_steps,
            weight_decay=0.0,
            max_grad_norm=1.0,
            optim="adamw_torch",
            logging_steps=max(1, args.steps // 10),
            save_strategy="no",
            report_to="none",
            seed=args.seed,
            bf16=bf16,
            use_cpu=not on_gpu,
            disable_tqdm=True,
            train_sampling_strategy=args.sampling,
        )
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            data_collator=collator,
            callbacks=[Timer()],
        )
        result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    tokens, examples = collator.totals(result.global_step * args.grad_accum)
    step_tokens, step_width = collator.per_step(result.global_step, args.grad_accum)
    return {
        "train_s": round(clock["s"], 3),
        "tokens": tokens,
        "examples": examples,
        "tokens_per_s": round(tokens / clock["s"], 2),
        "examples_per_s": round(examples / clock["s"], 3),
        "steps": result.global_step,
        "train_loss_first": losses[0] if losses else None,
        "train_loss_last": losses[-1] if losses else None,
        "padding": args.padding,
        "torch_threads": torch.get_num_threads(),
        "sampling": args.sampling,
        "precision": "bf16" if bf16 else "fp32",
        "precision_reason": chosen.reason,
        "step_s": clock["steps"],
        "step_cpu_s": clock["cpu_steps"],
        "step_tokens": step_tokens,
        "step_width": step_width,
    }


if __name__ == "__main__":
    raise SystemExit(main())
