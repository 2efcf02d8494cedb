"""Where an evaluation's time goes: bench's evaluation worker run in this process on a cell made by
benchmarks/speed.py (its adapter and settings), with every forward pass of the model timed and sorted
into prefill passes (more than one token per row: their real tokens counted) and decode steps (one).

Run with eval.prefix_reuse as shipped and switched off, alternately: the prefill tokens the shared
span saves, the cost per prefill token and per decode step on this host, and so the ratio any
prefill-side lever could reach at this batch and precision (decode steps cost the same on both
sides: each reads every weight once for a handful of rows). One JSON line per run.

    .venv/bin/python benchmarks/speed.py --phase eval --eval-sides bench_b8 --eval-repeats 1 --work W
    .venv/bin/python benchmarks/eval_breakdown.py --cell-dir W/results/cells/<the bench_b8 cell> \\
        --data-dir ../shared/data --repeats 1
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: the sibling modules
import measured  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell-dir", type=Path, required=True, help="a cell with its adapter (speed.py --work)")
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=HERE / "results" / "eval_breakdown.jsonl")
    return p.parse_args(argv)


class ForwardClock:
    """Times every forward pass of the base model's class; rows x real tokens for the prefill ones."""

    def __init__(self, model_class):
        self.model_class, self.original, self.calls = model_class, model_class.forward, []

    def __enter__(self):
        original = self.original

        @functools.wraps(original)  # keeps the signature: bench reads the cache keyword from it
        def timed(model, *args, **kwargs):
            mask = kwargs.get("attention_mask")
            ids = kwargs["input_ids"]
            start = time.perf_counter()
            out = original(model, *args, **kwargs)
            padded = mask is not None and mask.dim() == 2  # the last columns are this pass's tokens
            real = int(mask[:, -ids.shape[1] :].sum()) if padded else ids.numel()
            self.calls.append((ids.shape[1], real, time.perf_counter() - start))
            return out

        self.model_class.forward = timed
        return self

    def __exit__(self, *exc):
        self.model_class.forward = self.original

    def summary(self) -> dict:
        prefill = [c for c in self.calls if c[0] > 1]
        decode = [c for c in self.calls if c[0] == 1]
        prefill_s, decode_s = sum(c[2] for c in prefill), sum(c[2] for c in decode)
        tokens = sum(c[1] for c in prefill)
        return {"prefill_passes": len(prefill), "prefill_tokens": tokens, "prefill_s": round(prefill_s, 2),
                "ms_per_prefill_token": round(1000 * prefill_s / max(tokens, 1), 3),
                "decode_steps": len(decode), "decode_s": round(decode_s, 2),
                "ms_per_decode_step": round(1000 * decode_s / max(len(decode), 1), 1)}  # fmt: skip


def one_run(cell, cell_dir: Path, data_dir: Path, model, tokenizer, reuse: str) -> dict:
    from bench.workers import evaluate as ev

    cell = dataclasses.replace(cell, eval=dataclasses.replace(cell.eval, prefix_reuse=reuse))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    with tempfile.TemporaryDirectory() as out, ForwardClock(type(base)) as clock:
        shutil.copy(cell_dir / "cell.json", Path(out) / "cell.json")
        reused = {"base_load_s": 0.0, "base_shared_by": 1, "base_reused": False}
        outcome = ev.evaluate_cell(cell, Path(out), data_dir, model, tokenizer, 0.0, reused)
    m = outcome.metrics
    return {"prefix_reuse": reuse, "examples": m.examples, "eval_s": m.eval_s,
            "examples_per_s": m.examples_per_s, "prefix_span_passes": m.prefix_span_passes,
            **clock.summary()}  # fmt: skip


def ceiling(shipped: dict, whole: dict) -> dict:
    """The share of prefill tokens bench does not compute; the whole-rows side's time over bench's,
    measured and counting forward passes only; and the share of bench's forward time its decode steps
    take, which no prefill lever removes."""
    return {
        "prefill_tokens_saved": round(1 - shipped["prefill_tokens"] / whole["prefill_tokens"], 4),
        "measured_ratio": round(whole["eval_s"] / shipped["eval_s"], 3),
        "forward_ratio": round(forward(whole) / forward(shipped), 3),
        "decode_share_of_bench_forward": round(shipped["decode_s"] / forward(shipped), 3),
    }


def forward(side: dict) -> float:
    return side["prefill_s"] + side["decode_s"]


def main(argv=None) -> int:
    from bench.workers import evaluate as ev
    from bench.workers.protocol import read_cell

    args = parse_args(argv)
    cell = read_cell(args.cell_dir)
    base, tokenizer = ev.load_base(cell, args.data_dir)
    model, _ = ev.with_adapter(base, cell, args.cell_dir / "adapter")
    import torch

    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    host = measured.host_facts(torch.get_num_threads())
    for rep in range(args.repeats):
        order = ("exact", "off") if rep % 2 == 0 else ("off", "exact")
        sides = {r: one_run(cell, args.cell_dir, args.data_dir, model, tokenizer, r) for r in order}
        line = {"benchmark": "eval_breakdown", "run_id": run_id, "rep": rep, "cell": cell.id,
                "eval_bits": cell.eval_bits, "batch": cell.eval.batch_size, "sides": sides,
                **ceiling(sides["exact"], sides["off"]), "host": host}  # fmt: skip
        print(json.dumps({k: v for k, v in line.items() if k != "host"}, indent=1), flush=True)
        measured.append(line, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
