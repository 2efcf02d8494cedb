"""The baseline for benchmarks/speed.py: the paper's evaluation loop, re-implemented as FinLoRA's (and
FinGPT's) test code does it, with no bench code in the timed part.

Test rows in dataset order, batches of 8, the tokenizer padding each batch (left) to its longest prompt,
`model.generate` (greedy, max_new_tokens), every full sequence decoded, and the answer split off after
"Answer: ". The model is the base quantized to --bits with bitsandbytes plus the LoRA adapter.

Two of bench's evaluation levers can be switched on here one at a time, so that benchmarks/speed.py
measures each on its own against this loop: --sort-by-length (batches of similar prompt lengths, as
lm-eval orders them; outputs go back to file order) and --stop-early (bench's AnswersComplete stopping
rule: a batch stops once every row has ended or finished its first non-empty line, the part scored).

    python benchmarks/paper_eval.py --model DIR --adapter DIR --task fpb --limit 96 --out result.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from bench.core.precision import PRECISIONS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local model directory")
    p.add_argument("--adapter", default=None, help="peft adapter directory (none: the base model)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--task", default="fpb")
    p.add_argument("--bits", type=int, choices=(4, 8, 16), default=8)
    p.add_argument("--limit", type=int, default=None, help="first N test rows")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=10)
    p.add_argument("--sort-by-length", action="store_true", help="lever: batches of similar lengths")
    p.add_argument("--stop-early", action="store_true", help="lever: bench's stop on complete answers")
    p.add_argument("--precision", choices=PRECISIONS, default="bf16", help="as bench's eval.precision")
    p.add_argument("--out", type=Path, required=True, help="JSON result file (outputs included)")
    return p.parse_args(argv)


def compute(args) -> torch.dtype:
    """The dtype bench's evaluation computes in for the same --precision here (bench.core.precision): bf16
    on GPUs and native-bf16 CPUs, fp32 elsewhere, so the two loops compare at one precision. Not timed."""
    from bench.models.loading import compute_dtype

    return compute_dtype(torch.device("cuda" if torch.cuda.is_available() else "cpu"), args.precision)


def load(args):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

    on_gpu = torch.cuda.is_available()
    dtype = compute(args)
    quant = {
        4: BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype),
        8: BitsAndBytesConfig(load_in_8bit=True),
    }.get(args.bits)
    model = AutoModelForCausalLM.from_pretrained(
        args.model, dtype=dtype, quantization_config=quant, device_map="auto" if on_gpu else {"": "cpu"}
    )
    if args.adapter:
        model = PeftModel.from_pretrained(model, args.adapter)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def test_rows(args) -> list[dict]:
    """The task's test split as bench reads it (the same file, the same rows, in file order)."""
    from bench.core.data import load_splits

    rows = load_splits(args.task, args.data_dir).test
    return rows[: args.limit] if args.limit else rows


@torch.no_grad()
def generate_answers(
    model, tokenizer, contexts: list[str], batch: int, max_new: int, sort: bool = False, stop: bool = False
) -> list[str]:
    order = list(range(len(contexts)))
    if sort:  # longest first, as lm-eval's Collator: the first batch shows the peak memory
        lengths = [len(ids) for ids in tokenizer(contexts).input_ids]
        order.sort(key=lambda i: -lengths[i])
    answers = [None] * len(contexts)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        tokens = tokenizer(
            [contexts[i] for i in rows], return_tensors="pt", padding=True, return_token_type_ids=False
        ).to(model.device)
        criteria = None
        if stop:
            from transformers import StoppingCriteriaList

            from bench.workers.lm import AnswersComplete

            width = tokens["input_ids"].shape[1]
            criteria = StoppingCriteriaList(
                [AnswersComplete(tokenizer, width, len(rows), [tokenizer.eos_token_id])]
            )
        res = model.generate(
            **tokens,
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            stopping_criteria=criteria,
        )
        sentences = [tokenizer.decode(r, skip_special_tokens=True) for r in res]
        for i, sentence in zip(rows, sentences, strict=True):
            answers[i] = sentence.split("Answer: ")[1]
    return answers


def main(argv=None) -> int:
    args = parse_args(argv)
    model, tokenizer = load(args)
    rows = test_rows(args)
    contexts = [r["context"] for r in rows]
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    answers = generate_answers(
        model, tokenizer, contexts, args.batch, args.max_new_tokens, args.sort_by_length, args.stop_early
    )
    sync()
    seconds = time.perf_counter() - t0
    out = {
        "eval_s": round(seconds, 3),
        "examples": len(rows),
        "examples_per_s": round(len(rows) / seconds, 3),
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "sort_by_length": args.sort_by_length,
        "stop_early": args.stop_early,
        "precision": "bf16" if compute(args) == torch.bfloat16 else "fp32",
        "torch_threads": torch.get_num_threads(),
        "outputs": answers,
        "targets": [r["target"] for r in rows],
    }
    args.out.write_text(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
