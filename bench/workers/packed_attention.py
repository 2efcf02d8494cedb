"""Attention for the packed row of a training batch (bench.workers.prefix.packed_loss), row by row.

The packed row is [shared span, rest of row 0, rest of row 1, ...] under a mask that lets each rest
see the span and its own earlier tokens. Its linear layers gain from the packing (one dequantization
of each 4-bit weight, one well-shaped matmul); its attention does not: SDPA with a mask computes every
query against every key of the pack and masks afterwards, so a pack of 8 FPB rows (25 + 8 x ~45
tokens) computes ~160k query-key pairs for ~17k that count. Profiled on SmolLM2-135M 4-bit, 6 steps:
attention forward and backward were 11% of a step's CPU time, beside 56% for all matmuls.

Here each rest's queries meet only their own keys: the span's keys/values in front of each row's
rest, one SDPA per rest under a causal mask that also shows it the span, the span's own queries
causal among themselves; the outputs concatenated in the pack's order. Every query takes its
softmax over the same keys as under the full mask, so the loss and the LoRA gradients are those of
the whole rows to fp32 rounding (tests/test_prefix_reuse.py).

It is registered with transformers' AttentionInterface under its own name, and a model is switched to
it only where it computed "sdpa"; a forward pass without the pack's layout (an unshared batch, the
cached prefix pass) runs transformers' SDPA unchanged. The packed row still carries its full mask, so
a model whose layers do not pass the layout on still computes the right attention, only slower.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NAME = "bench_packed_sdpa"
LAYOUT_KEYWORD = "bench_pack"  # the forward keyword that carries a PackedRows down to every layer


@dataclass(frozen=True)
class PackedRows:
    """The pack's parts in order (the span, then each row's rest) and what each rest's queries see."""

    sizes: tuple[int, ...]  # (span, rest of row 0, rest of row 1, ...): tokens of each part
    masks: tuple[torch.Tensor, ...]  # per rest (rest, span + rest) bool: the span and its own earlier tokens


def packed_rows(span: int, rests: list[int], device: torch.device) -> PackedRows:
    """The layout of a pack of rests of these lengths after a span of `span` tokens."""

    def mask(rest: int) -> torch.Tensor:
        sees_span = torch.ones(rest, span, dtype=torch.bool)
        return torch.cat([sees_span, torch.ones(rest, rest, dtype=torch.bool).tril()], dim=1).to(device)

    return PackedRows((span, *rests), tuple(mask(r) for r in rests))


def packed_sdpa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention-function signature: query (1, heads, pack, dim), key and value
    (1, kv heads, pack, dim); returns (1, pack, heads, dim) and no weights. The parts are split off
    as views (their gradients are concatenated back, no zero-filled copies): one SDPA for the span,
    causal, and one per rest over [span, rest] keys."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    layout = kwargs.pop(LAYOUT_KEYWORD, None)
    if layout is None or query.shape[0] != 1:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)  # fmt: skip
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    qs, ks, vs = (t.split(layout.sizes, dim=2) for t in (query, key, value))
    outs = [F.scaled_dot_product_attention(qs[0], ks[0], vs[0], dropout_p=dropout, is_causal=True,
                                           scale=scaling)]  # fmt: skip
    for q, k, v, mask in zip(qs[1:], ks[1:], vs[1:], layout.masks, strict=True):
        k, v = torch.cat([ks[0], k], dim=2), torch.cat([vs[0], v], dim=2)
        outs.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout, scale=scaling))
    return torch.cat(outs, dim=2).transpose(1, 2).contiguous(), None


def install(model) -> bool:
    """Switch a model that computes "sdpa" to packed_sdpa (registered once); True if it now does."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    config = model.config
    if getattr(config, "_attn_implementation", None) == NAME:
        return True
    if getattr(config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # unshared batches: SDPA's own masks
    config._attn_implementation = NAME
    return True
