"""Where a training step's time goes: one forward and backward of bench's loss on the same batches as
the plain Trainer's computation, split by operator with torch.profiler and its matmul FLOPs counted
with torch's FlopCounterMode, on a cell made by benchmarks/speed.py (its model, bits, LoRA, rows).

Three computations of the same loss on each of bench's own batches (length-grouped rows of the cell's
training set), alternating:
  whole_rows_all_logits  the rows padded to the longest, the model's own `labels=` loss: logits at every
                         position (what the HF Trainer + peft script computes per step)
  whole_rows_sliced      the same rows, logits only at the loss positions (train.prefix_reuse: off)
  bench                  bench as shipped: the rows packed into one (span once), logits sliced
Per side: wall seconds of an unprofiled step, matmul GFLOPs, and the profiler's self CPU seconds in
matmuls, bitsandbytes' dequantization, attention and everything else, so the ratio a token-saving
lever could reach is set beside the time that does not shrink with tokens. One JSON line per run.

    .venv/bin/python benchmarks/speed.py --phase train --train-sides bench --repeats 1 --work W \\
        --train-limit 3634 --lora-dropout 0
    .venv/bin/python benchmarks/train_breakdown.py --cell-dir W/results/cells/<the cell> \\
        --data-dir ../shared/data --batches 8
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: the sibling modules
import measured  # noqa: E402
from packed_attention import bench_batches  # noqa: E402

SIDES = ("whole_rows_all_logits", "whole_rows_sliced", "bench")
# Profiler operator names -> category (self CPU time; the first matching prefix wins).
CATEGORIES = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm")),
    ("dequantize", ("bitsandbytes::", "bnb")),
    ("attention", ("aten::_scaled_dot_product", "aten::scaled_dot_product")),
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--batches", type=int, default=8)
    p.add_argument("--out", type=Path, default=HERE / "results" / "train_breakdown.jsonl")
    return p.parse_args(argv)


def side_loss(model, batch, side: str):
    from bench.workers.examples import target_loss
    from bench.workers.prefix import packed_loss

    if side == "bench":
        return packed_loss(model, batch)
    return target_loss(model, batch, sliced=side == "whole_rows_sliced")


def step(model, batch, side: str) -> float:
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    side_loss(model, batch, side).backward()
    return time.perf_counter() - start


def category(name: str) -> str:
    for label, prefixes in CATEGORIES:
        if name.startswith(prefixes):
            return label
    return "other"


def profiled(model, batch, side: str) -> dict:
    """One step under torch.profiler (self CPU seconds per category) and one under FlopCounterMode."""
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    model.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        side_loss(model, batch, side).backward()
    seconds = dict.fromkeys([c for c, _ in CATEGORIES] + ["other"], 0.0)
    for event in prof.key_averages():
        seconds[category(event.key)] += event.self_cpu_time_total / 1e6
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as flops:
        side_loss(model, batch, side).backward()
    return {"profiled_s": {k: round(v, 4) for k, v in seconds.items()},
            "matmul_gflop": round(flops.get_total_flops() / 1e9, 2)}  # fmt: skip


def batch_rows(model, batch, number: int) -> list[dict]:
    """Every side on one batch: an unprofiled step each (order alternating), then the profiled ones."""
    order = SIDES if number % 2 == 0 else SIDES[::-1]
    wall = {side: step(model, batch, side) for side in order}
    pack = batch.shared + sum(n - batch.shared for n in batch.lengths)
    width = batch.inputs["input_ids"].shape[1]
    return [{"batch": number, "side": side, "rows": batch.rows, "real_tokens": batch.tokens,
             "computed_tokens": pack if side == "bench" else batch.rows * width,
             "wall_s": round(wall[side], 4), **profiled(model, batch, side)} for side in SIDES]  # fmt: skip


def summary(rows: list[dict]) -> dict:
    """Per side: medians over batches, and bench's wall ratio against each whole-rows side."""
    out = {}
    for side in SIDES:
        mine = [r for r in rows if r["side"] == side]
        out[side] = {
            "wall_s": round(statistics.median(r["wall_s"] for r in mine), 4),
            "matmul_gflop": round(statistics.median(r["matmul_gflop"] for r in mine), 2),
            "profiled_s": {
                k: round(statistics.median(r["profiled_s"][k] for r in mine), 4)
                for k in mine[0]["profiled_s"]
            },
        }
    for other in SIDES[:2]:
        ratios = [
            a["wall_s"] / b["wall_s"]
            for a, b in zip(
                (r for r in rows if r["side"] == other),
                (r for r in rows if r["side"] == "bench"),
                strict=True,
            )
        ]
        out[f"bench_vs_{other}"] = measured.median_interval(ratios)
    return out


def main(argv=None) -> int:
    import torch

    from bench.models.loading import load_tokenizer, resolve_source
    from bench.workers.protocol import read_cell
    from bench.workers.train import build_model

    args = parse_args(argv)
    cell = read_cell(args.cell_dir)
    device = torch.device("cpu")
    source = resolve_source(cell.model, args.data_dir)
    model = build_model(cell, source, device).train()
    batches = bench_batches(cell, load_tokenizer(source, cell.model), args.data_dir, args.batches, device)
    for side in SIDES:
        step(model, batches[0], side)  # warm-up, untimed
    rows = [row for number, batch in enumerate(batches) for row in batch_rows(model, batch, number)]
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    host = {**measured.host_facts(torch.get_num_threads()), "load_avg_1m": measured.load_avg()}
    line = {"benchmark": "train_breakdown", "run_id": run_id, "cell": cell.id, "bits": cell.bits,
            "rank": cell.rank, "batch": cell.train.batch_per_gpu, "summary": summary(rows),
            "precision": str(model.get_input_embeddings().weight.dtype), "batches": rows,
            "host": host}  # fmt: skip
    measured.append(line, args.out)
    print({k: v for k, v in line.items() if k not in ("batches", "host")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
