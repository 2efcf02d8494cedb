"""The packed row's attention row by row (bench.workers.packed_attention) against SDPA over the whole
pack under its mask: one training step's forward and backward on the same model, the same batches,
alternating, on a cell made by benchmarks/speed.py (its model, bits, LoRA and training rows).

Each batch is one of bench's own: length-grouped rows of the cell's training set with their shared
span, packed as bench.workers.prefix.packed_loss packs them. Per batch and repetition both sides run
back to back (order alternating); the ratio is SDPA's time over the row-by-row time, and both losses
are kept (they must agree to fp32 rounding). One JSON line per run.

With --shapes (span x rest, e.g. 25x45,200x300) it times the attention alone instead: one layer's
forward and backward at the cell model's heads and head size, 8 rests of the given length after the
span, row by row against the masked pack, alternating: where the tasks' prompts are longer than
FPB's (XBRL's system text runs to hundreds of tokens) the pack's attention grows with its square.

    .venv/bin/python benchmarks/speed.py --phase train --train-sides bench --repeats 1 --work W \\
        --train-limit 3634 --lora-dropout 0
    .venv/bin/python benchmarks/packed_attention.py --cell-dir W/results/cells/<the cell> \\
        --data-dir ../shared/data --batches 12 --repeats 3
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


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cell-dir", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    p.add_argument("--batches", type=int, default=12)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--shapes", type=lambda v: [tuple(map(int, s.split("x"))) for s in v.split(",")],
                   help="span x rest pairs, comma separated: time one layer's attention alone")
    p.add_argument("--out", type=Path, default=HERE / "results" / "packed_attention.jsonl")
    return p.parse_args(argv)


def bench_batches(cell, tokenizer, data_dir: Path, count: int, device):
    from bench.workers.chat import chat_template_for
    from bench.workers.examples import encode_rows, length_grouped_batches, make_batch, training_rows
    from bench.workers.prefix import shared_span

    cfg = cell.train
    rows = training_rows(cell.task, data_dir, cfg.train_limit, cfg.seed, chat_template_for(cell, tokenizer))
    encoded = encode_rows(tokenizer, rows, cfg.max_seq_len)
    order = length_grouped_batches([len(e.input_ids) for e in encoded], cfg.batch_per_gpu, cfg.seed, 1)
    picked = [[encoded[i] for i in indices] for indices in order[:count]]
    return [make_batch(b, tokenizer.pad_token_id, device, shared_span(b)) for b in picked]


def timed_step(model, batch, attention: str) -> tuple[float, float]:
    """Seconds of one forward and backward of the packed row under `attention`, and its loss."""
    from bench.workers.prefix import packed_loss

    model.get_base_model().config._attn_implementation = attention
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    loss = packed_loss(model, batch)
    loss.backward()
    return time.perf_counter() - start, loss.item()


def attention_pairs(config, shapes, repeats: int) -> list[dict]:
    """One layer's attention, forward and backward, row by row and as the masked pack, alternating."""
    import torch

    from bench.workers import packed_attention

    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    module = torch.nn.Module()
    module.num_key_value_groups = heads // kv_heads
    pairs = []
    for span, rest in shapes:
        rests = [rest] * 8
        layout = packed_attention.packed_rows(span, rests, torch.device("cpu"))
        mask = pack_mask(span, rests)
        inputs = (heads, kv_heads, span + sum(rests), dim)
        attention_step(module, inputs, mask, layout), attention_step(module, inputs, mask, None)  # warm-up
        for rep in range(repeats):
            order = (layout, None) if rep % 2 == 0 else (None, layout)
            got = {side is not None: attention_step(module, inputs, mask, side) for side in order}
            pairs.append({"span": span, "rest": rest, "rep": rep, "row_by_row_s": round(got[True], 5),
                          "masked_pack_s": round(got[False], 5)})  # fmt: skip
    return pairs


def pack_mask(span: int, rests: list[int]):
    """packed_loss's additive mask: each rest sees the span and its own earlier tokens."""
    import torch

    length = span + sum(rests)
    segment = torch.cat([torch.full((span,), -1)] + [torch.full((r,), i) for i, r in enumerate(rests)])
    visible = torch.ones(length, length, dtype=torch.bool).tril()
    visible &= (segment[None, :] == -1) | (segment[None, :] == segment[:, None])
    return torch.zeros(visible.shape).masked_fill_(~visible, torch.finfo(torch.float32).min)[None, None]


def attention_step(module, inputs, mask, layout) -> float:
    """Seconds of one attention forward and backward on fresh random inputs; `layout` None: the pack."""
    import torch

    from bench.workers import packed_attention

    heads, kv_heads, length, dim = inputs
    q = torch.randn(1, heads, length, dim, requires_grad=True)
    k, v = (torch.randn(1, kv_heads, length, dim, requires_grad=True) for _ in range(2))
    extra = {packed_attention.LAYOUT_KEYWORD: layout} if layout is not None else {}
    start = time.perf_counter()
    out, _ = packed_attention.packed_sdpa(module, q, k, v, mask, **extra)
    out.sum().backward()
    return time.perf_counter() - start


def attention_main(args, cell, source) -> dict:
    from transformers import AutoConfig

    pairs = attention_pairs(AutoConfig.from_pretrained(source), args.shapes, args.repeats)
    by_shape = {}
    for span, rest in args.shapes:
        mine = [p for p in pairs if (p["span"], p["rest"]) == (span, rest)]
        ratios = [p["masked_pack_s"] / p["row_by_row_s"] for p in mine]
        by_shape[f"{span}x{rest}"] = measured.median_interval(ratios)
    return {"benchmark": "packed_attention_layer", "cell": cell.id, "rests": 8, "speedup": by_shape,
            "pairs": pairs}  # fmt: skip


def main(argv=None) -> int:
    import torch

    from bench.models.loading import load_tokenizer, resolve_source
    from bench.workers import packed_attention
    from bench.workers.protocol import read_cell
    from bench.workers.train import build_model

    args = parse_args(argv)
    cell = read_cell(args.cell_dir)
    device = torch.device("cpu")
    source = resolve_source(cell.model, args.data_dir)
    if args.shapes:
        line = {**attention_main(args, cell, source), "run_id": f"{time.strftime('%Y%m%dT%H%M%S')}-"
                f"{uuid.uuid4().hex[:6]}", "host": {**measured.host_facts(torch.get_num_threads()),
                "load_avg_1m": measured.load_avg()}}  # fmt: skip
        measured.append(line, args.out)
        print({k: v for k, v in line.items() if k not in ("pairs", "host")})
        return 0
    tokenizer = load_tokenizer(source, cell.model)
    model = build_model(cell, source, device).train()
    assert model.get_base_model().config._attn_implementation == packed_attention.NAME
    batches = bench_batches(cell, tokenizer, args.data_dir, args.batches, device)
    timed_step(model, batches[0], packed_attention.NAME)  # warm-up, untimed
    sides, pairs = (packed_attention.NAME, "sdpa"), []
    for rep in range(args.repeats):
        for number, batch in enumerate(batches):
            order = sides if (rep + number) % 2 == 0 else sides[::-1]
            got = {side: timed_step(model, batch, side) for side in order}
            pairs.append({
                "rep": rep, "batch": number, "rows": batch.rows, "shared": batch.shared,
                "pack": batch.shared + sum(n - batch.shared for n in batch.lengths),
                "row_by_row_s": round(got[sides[0]][0], 4), "masked_pack_s": round(got[sides[1]][0], 4),
                "loss_row_by_row": got[sides[0]][1], "loss_masked_pack": got[sides[1]][1],
            })  # fmt: skip
    ratios = [p["masked_pack_s"] / p["row_by_row_s"] for p in pairs]
    worst = max(abs(p["loss_row_by_row"] / p["loss_masked_pack"] - 1) for p in pairs)
    run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    host = {**measured.host_facts(torch.get_num_threads()), "load_avg_1m": measured.load_avg()}
    line = {"benchmark": "packed_attention", "run_id": run_id, "cell": cell.id, "bits": cell.bits,
            "rank": cell.rank, "batch": cell.train.batch_per_gpu, "speedup": measured.median_interval(ratios),
            "row_by_row_s_median": round(statistics.median(p["row_by_row_s"] for p in pairs), 4),
            "masked_pack_s_median": round(statistics.median(p["masked_pack_s"] for p in pairs), 4),
            "largest_relative_loss_difference": worst, "pairs": pairs, "host": host}  # fmt: skip
    measured.append(line, args.out)
    print({k: v for k, v in line.items() if k not in ("pairs", "host")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
