"""Prefix reuse in training (`train.prefix_reuse`): the rows of a micro-batch that begin with the same
tokens (every FinLoRA prompt opens with its task's instruction, 45% of an FPB prompt) compute that span
once, as a batch of one, and every row's remainder attends to its keys/values.

The shared keys/values are repeated to the batch inside the autograd graph (never detached), so the
gradient of every row's loss flows back through the one prefix computation into the LoRA weights: by
the chain rule the same gradients as computing the span in each row. Positions continue after the span
and the attention mask covers span + remainder, so each row sees what it sees unshared; the loss
positions all lie after the span (shared_span stops before the first one), so the logits and the
loss are those of the whole rows.
"""

from __future__ import annotations

import inspect
import os
from copy import deepcopy

import torch
import torch.nn.functional as F

from bench.workers import packed_attention
from bench.workers.examples import IGNORE, Batch, Encoded, target_loss

# A shorter common span is not worth its own forward pass: the pass and the repeat of the keys/values
# have a fixed cost per layer (and on a GPU ~ a dozen kernel launches per layer) that a handful of
# saved tokens per row does not repay. Spans shorter than this are the accidental ones anyway (BOS,
# "Instruction: What is the"); every FinLoRA instruction is longer (FPB 25 tokens with SmolLM2's
# tokenizer, XBRL's system text hundreds).
MIN_SHARED_TOKENS = 16


def first_loss_position(example: Encoded) -> int:
    """The first position whose next token carries loss (the prompt's last token)."""
    return next((p for p in range(len(example.labels) - 1) if example.labels[p + 1] != IGNORE),
                len(example.labels) - 1)  # fmt: skip


def shared_span(examples: list[Encoded]) -> int:
    """Leading tokens every row has, ending before the first loss position of any row (so the prefix
    pass computes no logits that carry loss); 0 when under MIN_SHARED_TOKENS or a batch of one.
    Training rows are unpadded here (collate right-pads later) and BOS, if the tokenizer adds one, is
    part of the span like any other token."""
    if len(examples) < 2:
        return 0
    common = len(os.path.commonprefix([e.input_ids for e in examples]))  # works on lists of ints too
    span = min(common, *(first_loss_position(e) for e in examples))
    return span if span >= MIN_SHARED_TOKENS else 0


def off_reason(model, setting: str, lora_dropout: float = 0.0, sliced: bool = False) -> str | None:
    """Why prefix reuse does not run on this (peft-wrapped) model under train.prefix_reuse `setting`
    (bench.core.cell.PREFIX_REUSE), or None where it runs. `sliced`: the loss takes logits at the loss
    positions only, so batch_loss packs the batch where the attention takes a custom mask."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if setting == "off":
        return "train.prefix_reuse: off"
    # is_activation_checkpointing: transformers' new name; is_gradient_checkpointing before it.
    checkpointed = getattr(base, "is_activation_checkpointing", None)
    if checkpointed is None:
        checkpointed = getattr(base, "is_gradient_checkpointing", False)
    if checkpointed and not (sliced and packable(model)):
        # The cached prefix pass: a checkpointed layer runs without its cache (transformers sets
        # use_cache=False) and would write it a second time when it reruns in the backward pass. The
        # packed row keeps no cache: its layers recompute in the backward pass as any other batch's.
        return "gradient checkpointing: checkpointed layers keep no keys/values to share"
    if cache_keyword(base) is None:
        return f"{type(base).__name__}.forward takes no key/value cache"
    if setting == "exact" and lora_dropout > 0:
        # Dropout acts on each LoRA layer's input: shared, the span of every row would get one mask.
        return (f"lora_dropout {lora_dropout:g}: a shared span would draw one dropout mask for all its rows, "
                "not one per row (not exact); train.prefix_reuse: always shares anyway")  # fmt: skip
    return None


def eval_reuse(setting: str, eval_bits: int) -> bool:
    """Whether evaluation prefills the shared span once (eval.prefix_reuse; bench.core.cell)."""
    return setting == "always" or (setting == "exact" and eval_bits == 16)


def cache_keyword(base) -> str | None:
    """The forward's cache argument: `cache` in newer transformers (5.24 here), `past_key_values` before."""
    names = inspect.signature(base.forward).parameters
    return next((k for k in ("cache", "past_key_values") if k in names), None)


# Attention implementations that take a custom 4D additive mask as it is (flash-attention takes none);
# packed_attention's computes the packed row's attention row by row and SDPA's elsewhere.
PACKABLE_ATTENTION = ("sdpa", "eager", packed_attention.NAME)


def batch_loss(model, batch: Batch, sliced: bool) -> torch.Tensor:
    """target_loss, with the batch's shared span computed once where it has one: packed into one row
    where the model takes a custom mask (sliced logits), else as a cached prefix pass."""
    if not batch.shared:
        return target_loss(model, batch, sliced)
    return packed_loss(model, batch) if sliced and packable(model) else shared_loss(model, batch, sliced)


def packable(model) -> bool:
    return attention_name(model) in PACKABLE_ATTENTION


def attention_name(model) -> str | None:
    base = model.module if hasattr(model, "module") else model  # the DeepSpeed engine's peft model
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    return getattr(base.config, "_attn_implementation", None)


def packed_layout(batch: Batch, device: torch.device):
    """One row [span, rest of row 0, rest of row 1, ...]: its token indices into the flattened batch,
    its positions (each rest continues after the span) and which key each query sees: the span and its
    own row's earlier tokens, as the whole row would."""
    n, width = batch.shared, batch.inputs["input_ids"].shape[1]
    rests = [length - n for length in batch.lengths]
    index = torch.cat([torch.arange(n)] + [torch.arange(i * width + n, i * width + n + r)
                                           for i, r in enumerate(rests)])  # fmt: skip
    positions = torch.cat([torch.arange(n)] + [torch.arange(n, n + r) for r in rests])
    segment = torch.cat([torch.full((n,), -1)] + [torch.full((r,), i) for i, r in enumerate(rests)])
    causal = positions.new_ones(len(index), len(index), dtype=torch.bool).tril()
    visible = causal & ((segment[None, :] == -1) | (segment[None, :] == segment[:, None]))
    # A row's position p (>= n) sits at p + offset in the pack: after the rests packed before it.
    offsets = torch.tensor([sum(rests[:i]) for i in range(len(rests))])
    return [t.to(device) for t in (index, positions, visible, offsets)]


def packed_loss(model, batch: Batch) -> torch.Tensor:
    """The loss target_loss computes (sliced logits), the shared span once: all rows packed into one
    sequence under a mask, so every layer runs one matmul of span + remainders (one dequantization of
    a 4-bit weight, one well-shaped product) where the cached prefix pass runs two, the first of only
    the span's few rows. Measured on SmolLM2-135M 4-bit, 8 FPB-like rows: 1.23x the whole rows where
    the cached prefix pass gives 1.14x. The extra attention (span + every rest as one masked sequence)
    grows with the square of the pack, unless the model computes packed_attention's, which takes the
    layout and gives each rest's queries only the span's and its own keys."""
    ids = batch.inputs["input_ids"]
    index, positions, visible, offsets = packed_layout(batch, ids.device)
    dtype = model.get_input_embeddings().weight.dtype
    mask = torch.zeros(visible.shape, dtype=dtype, device=ids.device)
    mask.masked_fill_(~visible, torch.finfo(dtype).min)  # additive: what eager and sdpa both take
    # Filler positions (0, target IGNORE) would fall before the row's rest: clamped, still IGNORE.
    keep = (batch.positions + offsets[:, None]).clamp(min=0).reshape(1, -1)
    layout = {}
    if attention_name(model) == packed_attention.NAME:
        rests = [length - batch.shared for length in batch.lengths]
        rows = packed_attention.packed_rows(batch.shared, rests, ids.device)
        layout = {packed_attention.LAYOUT_KEYWORD: rows}
    logits = model(input_ids=ids.flatten()[index][None], attention_mask=mask[None, None],
                   position_ids=positions[None], logits_to_keep=keep, **layout).logits  # fmt: skip
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)


def shared_loss(model, batch: Batch, sliced: bool) -> torch.Tensor:
    """The loss target_loss computes, with the first `batch.shared` tokens run once for all rows."""
    n = batch.shared
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    rows, width = ids.shape
    base = model.module if hasattr(model, "module") else model  # the DeepSpeed engine's peft model
    keyword = cache_keyword(base.get_base_model() if hasattr(base, "get_base_model") else base)
    # logits_to_keep=1: one vocabulary row for the span instead of n (it carries no loss).
    head = model(input_ids=ids[:1, :n], attention_mask=mask[:1, :n], use_cache=True, logits_to_keep=1)
    cache = getattr(head, keyword)
    cache.batch_repeat_interleave(rows)  # differentiable: every row's gradient reaches the one span
    rest = {
        "input_ids": ids[:, n:],
        "attention_mask": mask,  # span + remainder, right padding as in the whole rows
        "position_ids": torch.arange(n, width, device=ids.device).expand(rows, -1),
        keyword: cache,
        "use_cache": True,
    }
    if not sliced:
        # The model's own shifted loss over the remainder: the one label it cannot see (at position n,
        # predicted from the span's last token) is a prompt token, IGNORE, since n <= the first loss
        # position.
        return model(**rest, labels=batch.inputs["labels"][:, n:]).loss
    # Filler positions (0, target IGNORE) would fall before the remainder: clamped, still IGNORE.
    logits = model(**rest, logits_to_keep=(batch.positions - n).clamp(min=0)).logits
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)


# -- evaluation: the shared span prefilled once for every row of a generate() batch ------------------


def shared_context(context: torch.Tensor, mask: torch.Tensor) -> int:
    """Leading tokens every row's context has after its left padding (lm-eval pads on the left), leaving
    each row at least one token of its own for the prefill's last logits; 0 under MIN_SHARED_TOKENS."""
    if context.shape[0] < 2:
        return 0
    starts = (mask == 0).long().cumprod(dim=1).sum(dim=1).tolist()  # each row's left padding
    real = [row[start:] for row, start in zip(context.tolist(), starts, strict=True)]
    span = min(len(os.path.commonprefix(real)), *(len(r) - 1 for r in real))
    return span if span >= MIN_SHARED_TOKENS else 0


def with_span_first(context: torch.Tensor, mask: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row as [shared span, its left padding, the rest]: the span's keys/values sit at the front of
    every row, where one prefilled cache holds them. Positions come from the mask (generate counts
    the attended tokens), so every token keeps the position it had: the span 0..n-1, the rest after."""
    pads = (mask == 0).long().cumprod(dim=1).sum(dim=1)
    ids, attended = context.clone(), mask.clone()
    for i, pad in enumerate(pads.tolist()):
        ids[i, :n], attended[i, :n] = context[i, pad : pad + n], 1
        ids[i, n : n + pad], attended[i, n : n + pad] = context[i, :pad], 0
    return ids, attended


def span_cache(model, span: torch.Tensor):
    """The keyword that hands a cache to generate(), and `span`'s (1, n) keys/values."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    keyword = cache_keyword(base)
    with torch.no_grad():
        out = model(input_ids=span, attention_mask=torch.ones_like(span), use_cache=True, logits_to_keep=1)
    return keyword, getattr(out, keyword)


class SpanCaches:
    """The shared spans one evaluation has prefilled, kept for its later batches: every batch of a task
    begins with the same instruction, so its keys/values are computed once per cell, not once per
    batch. Each batch gets its own copy, repeated to its rows (generate() appends to the cache it is
    handed); the kept one stays as computed, so every batch sees the values a fresh prefill gives
    (the same one-row forward pass). Kept per BenchLM, that is per cell: an adapter swap or merge
    starts a new one. At most `capacity` spans, the least recently used dropped first."""

    def __init__(self, capacity: int = 8):
        self.capacity, self.kept, self.computed = capacity, {}, 0

    def span_for(self, common: list[int]) -> int:
        """How many of the batch's `common` leading tokens to share: the longest kept span they begin
        with (no pass at all), else all of them (a new pass, kept)."""
        kept = [len(k) for k in self.kept if len(k) <= len(common) and tuple(common[: len(k)]) == k]
        return max(kept, default=len(common))

    def cache_for(self, model, span: torch.Tensor, rows: int):
        """generate()'s keyword and a cache holding `span`'s (1, n) keys/values for each of `rows`."""
        key = tuple(span[0].tolist())
        if key not in self.kept:
            self.kept[key] = span_cache(model, span)
            self.computed += 1
            if len(self.kept) > self.capacity:
                self.kept.pop(next(iter(self.kept)))
        keyword, cache = self.kept.pop(key)
        self.kept[key] = (keyword, cache)  # most recently used last
        copy = deepcopy(cache)
        copy.batch_repeat_interleave(rows)
        return keyword, copy
