"""The second baseline for benchmarks/speed.py: stock lm-eval's `hf` model (HFLM) on bench's task YAMLs,
as a user runs `lm_eval --model hf --model_args pretrained=DIR,peft=ADAPTER --include_path ...`, with no
bench code in the timed part.

HFLM loads the model and the adapter (untimed), then lm-eval's `evaluate()` runs the task: HFLM sorts
the requests longest first (its Collator), pads each batch on the left, generates greedily to the task's
max_gen_toks with its own stop criteria, and the task's filter keeps the first non-empty line. The timed
part is that `evaluate()` call, the same call bench's worker makes; `simple_evaluate` (what the CLI
runs) adds about a second of environment report (pip list, git) that is not evaluation.

    python benchmarks/lmeval_stock.py --model DIR --adapter DIR --data-dir DATA --task fpb --out r.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from bench.core.precision import PRECISIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script: the sibling module
from paper_eval import compute  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="local model directory")
    p.add_argument("--adapter", default=None, help="peft adapter directory (none: the base model)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--task", default="fpb")
    p.add_argument("--limit", type=int, default=None, help="first N test rows")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--precision", choices=PRECISIONS, default="bf16", help="as bench's eval.precision")
    p.add_argument("--out", type=Path, required=True, help="JSON result file (outputs included)")
    return p.parse_args(argv)


def dtype_name(args) -> str:
    """The dtype bench computes in for this --precision (paper_eval.compute), as HFLM's `dtype`."""
    return "bfloat16" if compute(args) == torch.bfloat16 else "float32"


def main(argv=None) -> int:
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from bench.core.catalog import TASKS_DIR

    args = parse_args(argv)
    dtype = dtype_name(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=args.model, peft=args.adapter, dtype=dtype, batch_size=args.batch, device=device)
    manager = TaskManager(include_path=str(TASKS_DIR), include_defaults=False,
                          metadata={"data_dir": str(args.data_dir)})  # fmt: skip
    tasks = manager.load([args.task])
    for task in tasks["tasks"].values():
        task.set_config(key="num_fewshot", value=0)
    t0 = time.perf_counter()
    results = evaluate(lm=lm, task_dict=tasks, limit=args.limit, log_samples=True, bootstrap_iters=0)
    seconds = time.perf_counter() - t0
    samples = sorted(results["samples"][args.task], key=lambda s: s["doc_id"])
    out = {
        "eval_s": round(seconds, 3),
        "examples": len(samples),
        "examples_per_s": round(len(samples) / seconds, 3),
        "batch": args.batch,
        "precision": "bf16" if dtype == "bfloat16" else "fp32",
        "torch_threads": torch.get_num_threads(),
        "outputs": [s["resps"][0][0] for s in samples],  # the generation (new tokens), unfiltered
        "targets": [s["target"] for s in samples],
    }
    args.out.write_text(json.dumps(out, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
