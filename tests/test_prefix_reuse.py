"""Prefix reuse (train.prefix_reuse, bench.workers.prefix): the span every row of a batch begins with,
computed once, gives the loss and LoRA gradients of the whole rows to fp32 rounding; a batch without
such a span falls back to the whole rows; rows of one task meet in length-grouped batches."""

from __future__ import annotations

import os

import pytest
import torch

from bench.core.matrix import MatrixError, parse
from bench.workers import packed_attention
from bench.workers.examples import (
    IGNORE,
    Encoded,
    keeps_logits,
    length_grouped_batches,
    make_batch,
    target_loss,
)
from bench.workers.prefix import (
    MIN_SHARED_TOKENS,
    batch_loss,
    off_reason,
    packable,
    packed_loss,
    shared_loss,
    shared_span,
)

INSTRUCTION = [1] + list(range(5, 5 + 23))  # BOS and a 23-token "instruction": 24 shared tokens


def tiny_lora_llama(attention: str):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    per_row = attention == packed_attention.NAME  # SDPA's model, switched as build_model switches it
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
        attn_implementation="sdpa" if per_row else attention,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    if per_row:
        assert packed_attention.install(model)
    model.config.use_cache = False  # as bench.workers.train.build_model sets it
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, lora).train()


def rows(lead: list[int]) -> list[Encoded]:
    """Rows of differing lengths after `lead`: right padding of 2 to 15 tokens in the batch."""
    out = []
    for text, n_target in ((range(40, 46), 1), (range(50, 63), 2), (range(70, 90), 1), (range(30, 35), 3)):
        prompt, target = lead + list(text), [91 + i for i in range(n_target)] + [2]
        out.append(Encoded(prompt + target, [IGNORE] * len(prompt) + target, False))
    return out


def loss_and_grads(model, examples, shared: int, sliced: bool, loss_fn=batch_loss):
    model.zero_grad()
    batch = make_batch(examples, pad_id=0, device=torch.device("cpu"), shared=shared)
    loss = loss_fn(model, batch, sliced)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


# sdpa: what a model loads with by default; bench_packed_sdpa: what build_model switches it to
@pytest.mark.parametrize("attention", ["sdpa", "eager", packed_attention.NAME])
@pytest.mark.parametrize("sliced", [True, False])
@pytest.mark.parametrize("path", ["packed", "cached"])  # cached: flash-attention, or all-position logits
def test_shared_span_gives_the_loss_and_lora_gradients_of_whole_rows(attention, sliced, path):
    model = tiny_lora_llama(attention)
    if sliced and not keeps_logits(model):
        pytest.skip("this transformers has no per-row logits_to_keep")
    if path == "packed" and not sliced:
        pytest.skip("packing computes logits at the loss positions only")
    assert packable(model)
    examples = rows(INSTRUCTION)
    assert shared_span(examples) == len(INSTRUCTION)
    whole_loss, whole = loss_and_grads(model, examples, 0, sliced)
    loss_fn = (lambda m, b, _: packed_loss(m, b)) if path == "packed" else shared_loss
    shared_loss_value, shared = loss_and_grads(model, examples, len(INSTRUCTION), sliced, loss_fn)
    assert shared_loss_value == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == shared.keys() and len(whole) == 12  # A and B of q, k, v in 2 layers
    worst = 0.0
    for name, grad in whole.items():
        assert grad.norm() > 0, name
        relative = ((shared[name] - grad).norm() / grad.norm()).item()
        assert relative < 1e-5, f"{name}: relative difference {relative:.2e}"
        worst = max(worst, relative)
    if path == "packed":  # what bench trains with here: batch_loss chooses the packed row
        batch = make_batch(examples, pad_id=0, device=torch.device("cpu"), shared=len(INSTRUCTION))
        assert batch_loss(model, batch, True).item() == shared_loss_value
    print(f"loss {whole_loss:.8f} vs {shared_loss_value:.8f} "
          f"(relative {abs(shared_loss_value / whole_loss - 1):.1e}); "
          f"largest relative gradient difference {worst:.1e}")


def test_span_stops_before_the_first_loss_position_and_short_spans_are_not_shared():
    examples = rows(INSTRUCTION)
    # One row whose whole prompt is the instruction: its last prompt token predicts its target.
    target = [91, 2]
    short = Encoded(INSTRUCTION + target, [IGNORE] * len(INSTRUCTION) + target, False)
    assert shared_span([*examples, short]) == len(INSTRUCTION) - 1
    assert shared_span(rows(INSTRUCTION[: MIN_SHARED_TOKENS - 1])) == 0
    assert shared_span(rows(INSTRUCTION)[:1]) == 0  # one row: nothing to share


def test_a_batch_without_a_common_prefix_falls_back_to_whole_rows():
    model = tiny_lora_llama("sdpa")
    mixed = rows(INSTRUCTION)[:3] + rows([1] + list(range(60, 83)))[3:]
    assert len(os.path.commonprefix([e.input_ids for e in mixed])) == 1  # BOS only
    assert shared_span(mixed) == 0
    batch = make_batch(mixed, 0, torch.device("cpu"), shared=shared_span(mixed))
    assert batch_loss(model, batch, True).item() == target_loss(model, batch, True).item()


def test_reuse_is_off_when_switched_off_inexact_under_dropout_or_layers_are_checkpointed():
    model = tiny_lora_llama("sdpa")
    assert off_reason(model, "exact") is None and off_reason(model, "always", 0.1) is None
    assert off_reason(model, "off") == "train.prefix_reuse: off"
    assert "one dropout mask for all its rows" in off_reason(model, "exact", 0.1)
    model.get_base_model().gradient_checkpointing_enable()
    assert "gradient checkpointing" in off_reason(model, "exact")  # all logits: the cached prefix pass
    assert "gradient checkpointing" in off_reason(model, "always")
    assert off_reason(model, "exact", sliced=True) is None  # the packed row keeps no cache


@pytest.mark.parametrize("attention", ["sdpa", packed_attention.NAME])
def test_the_packed_row_under_gradient_checkpointing_gives_the_gradients_of_whole_rows(attention):
    """Checkpointed layers rerun in the backward pass; the packed row keeps no cache, so they recompute
    the same span + remainders (the layout passed again) and the LoRA gradients are those of the whole
    rows, unchecked."""
    model = tiny_lora_llama(attention)
    if not keeps_logits(model):
        pytest.skip("this transformers has no per-row logits_to_keep")
    examples = rows(INSTRUCTION)
    whole_loss, whole = loss_and_grads(model, examples, 0, True)
    model.get_base_model().gradient_checkpointing_enable()
    model.enable_input_require_grads()  # as prepare_model_for_kbit_training: reentrant checkpoints need it
    assert off_reason(model, "exact", sliced=True) is None
    packed_value, packed = loss_and_grads(model, examples, len(INSTRUCTION), True)
    assert packed_value == pytest.approx(whole_loss, rel=1e-5)
    assert whole.keys() == packed.keys() and len(whole) == 12
    for name, grad in whole.items():
        assert grad.norm() > 0, name
        assert ((packed[name] - grad).norm() / grad.norm()).item() < 1e-5, name


def test_evaluation_shares_where_its_tokens_stay_the_same():
    from bench.workers.prefix import eval_reuse

    assert eval_reuse("exact", 16) and not eval_reuse("exact", 8) and not eval_reuse("exact", 4)
    assert eval_reuse("always", 8) and not eval_reuse("off", 16)


def test_length_grouping_keeps_a_task_together_and_is_unchanged_for_one_task():
    lengths = [i % 9 + 5 for i in range(96)]
    tasks = ["fpb" if i % 3 else "tfns" for i in range(96)]
    alone = length_grouped_batches(lengths, 8, seed=7, world=1)
    assert length_grouped_batches(lengths, 8, seed=7, world=1, groups=["fpb"] * 96) == alone
    grouped = length_grouped_batches(lengths, 8, seed=7, world=1, groups=tasks)
    assert grouped == length_grouped_batches(lengths, 8, seed=7, world=1, groups=tasks)  # resumable
    mixed = sum(len({tasks[i] for i in b}) > 1 for b in grouped)
    assert mixed <= 1 and sum(len({tasks[i] for i in b}) > 1 for b in alone) > mixed
    assert sorted(i for b in grouped for i in b) == list(range(96))


def test_prefix_reuse_default_keeps_cell_keys_and_the_others_change_them(tmp_path):
    def cell(train: dict):
        raw = {"name": "p", "models": {"m": {"source": "tiny"}},
               "axes": {"model": ["m"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
               "train": {"max_steps": 2, **train}}  # fmt: skip
        (only,) = parse(raw, tmp_path / "m.yaml").cells
        return only

    shipped, explicit, off = cell({}), cell({"prefix_reuse": "exact"}), cell({"prefix_reuse": "off"})
    assert "prefix_reuse" not in shipped.to_dict()["train"] and shipped.key == explicit.key
    assert off.key != shipped.key and off.train.prefix_reuse == "off"
    assert cell({"prefix_reuse": "always"}).key not in (shipped.key, off.key)
    with pytest.raises(MatrixError, match=r"train\.prefix_reuse.*not one of exact, always, off"):
        cell({"prefix_reuse": "on"})
    with pytest.raises(MatrixError, match=r"train\.prefix_reuse.*must be a string"):
        cell({"prefix_reuse": True})


def test_flops_count_the_shared_span_once():
    from bench.core.architecture import Shape
    from bench.core.flops import LoraStep
    from bench.workers.utilisation import batch_flops

    arch = Shape(
        hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=97, tied=False
    )
    step, examples = LoraStep(arch, 4, ("q_proj", "k_proj", "v_proj")), rows(INSTRUCTION)
    whole, shared = batch_flops(step, examples, True), batch_flops(step, examples, True, len(INSTRUCTION))
    tokens = sum(len(e.input_ids) for e in examples)
    computed = tokens - (len(examples) - 1) * len(INSTRUCTION)  # the span once, each remainder
    assert shared.base_forward == pytest.approx(whole.base_forward * computed / tokens)
    assert shared.lm_head == whole.lm_head + step.batch([1], 1).lm_head  # the span's one logit row
    assert 0 < shared.attention < whole.attention
    packed = batch_flops(step, examples, True, len(INSTRUCTION), packed=True)
    assert packed.lm_head == whole.lm_head  # the packed row computes no logit in the span
    assert packed.base_forward == shared.base_forward and packed.attention == shared.attention


def left_padded(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """As lm-eval's HFLM encodes a generation batch: padded on the left, with its attention mask."""
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_generation_with_the_span_prefilled_once_per_cell_gives_the_same_tokens(attention):
    """Two generate() batches of one task: the span is computed for the first and reused by the
    second, and each batch's tokens are those of its whole rows."""
    from bench.workers.prefix import SpanCaches, first_loss_position, shared_context, with_span_first

    model = tiny_lora_llama(attention).eval()
    prompts = [e.input_ids[: first_loss_position(e) + 1] for e in rows(INSTRUCTION)]
    settings = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 0, "eos_token_id": None}
    caches = SpanCaches()
    for batch in (prompts[:2], prompts[2:]):
        ids, mask = left_padded(batch, pad=0)
        n = caches.span_for(ids[0][mask[0].bool()][: shared_context(ids, mask)].tolist())
        assert n == len(INSTRUCTION)
        whole = model.generate(input_ids=ids, attention_mask=mask, **settings)
        moved, attended = with_span_first(ids, mask, n)
        keyword, cache = caches.cache_for(model, moved[:1, :n], len(batch))
        shared = model.generate(input_ids=moved, attention_mask=attended, **{keyword: cache}, **settings)
        assert torch.equal(shared[:, ids.shape[1] :], whole[:, ids.shape[1] :])  # what lm-eval keeps
        assert cache.get_seq_length() == shared.shape[1] - 1  # generate() decoded on the prefilled cache
    assert caches.computed == 1
    (kept,) = (cache for _, cache in caches.kept.values())
    assert kept.get_seq_length() == len(INSTRUCTION)  # the batches' decoding left the kept span as it was


def test_a_kept_span_serves_batches_that_share_more_and_new_spans_are_kept_up_to_capacity():
    from bench.workers.prefix import SpanCaches

    model = tiny_lora_llama("sdpa").eval()
    caches = SpanCaches(capacity=2)
    span = torch.tensor([INSTRUCTION])
    caches.cache_for(model, span, rows=3)
    assert caches.span_for(INSTRUCTION + [40, 41]) == len(INSTRUCTION)  # the kept span, no new pass
    other = [1] + list(range(60, 80))
    assert caches.span_for(other) == len(other)  # nothing kept begins it: all of it, a new pass
    for lead in (other, [1] + list(range(30, 50))):
        caches.cache_for(model, torch.tensor([lead]), rows=2)
    assert caches.computed == 3 and len(caches.kept) == 2
    assert tuple(INSTRUCTION) not in caches.kept  # the least recently used went first


def test_generation_batches_without_a_long_common_span_are_not_shared():
    from bench.workers.prefix import shared_context

    ids, mask = left_padded([INSTRUCTION + [40, 41], [1] + list(range(60, 90))], pad=0)
    assert shared_context(ids, mask) == 0
    ids, mask = left_padded([INSTRUCTION + [40], INSTRUCTION], pad=0)
    assert shared_context(ids, mask) == len(INSTRUCTION) - 1  # the shorter row keeps a token of its own


def test_row_by_row_attention_of_the_pack_equals_the_masked_pack():
    """packed_sdpa against SDPA over the whole pack under its full mask: the same outputs, and the
    same gradients of query, key and value (grouped-query heads, rests of unequal lengths)."""
    from transformers.integrations.sdpa_attention import repeat_kv

    torch.manual_seed(0)
    span, rests, heads, kv_heads, dim = 5, [3, 7, 1, 4], 4, 2, 8
    length = span + sum(rests)
    module = torch.nn.Module()
    module.num_key_value_groups = heads // kv_heads
    q = torch.randn(1, heads, length, dim, requires_grad=True)
    k, v = (torch.randn(1, kv_heads, length, dim, requires_grad=True) for _ in range(2))
    segment = torch.cat([torch.full((span,), -1)] + [torch.full((r,), i) for i, r in enumerate(rests)])
    visible = torch.ones(length, length, dtype=torch.bool).tril()
    visible &= (segment[None, :] == -1) | (segment[None, :] == segment[:, None])
    full = torch.nn.functional.scaled_dot_product_attention(
        q, repeat_kv(k, 2), repeat_kv(v, 2), attn_mask=visible, scale=0.3
    ).transpose(1, 2)
    layout = packed_attention.packed_rows(span, rests, torch.device("cpu"))
    rowwise, _ = packed_attention.packed_sdpa(module, q, k, v, visible[None, None], scaling=0.3,
                                              **{packed_attention.LAYOUT_KEYWORD: layout})  # fmt: skip
    assert rowwise.shape == full.shape == (1, length, heads, dim)
    torch.testing.assert_close(rowwise, full, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(full)
    grads_full = torch.autograd.grad((full * weights).sum(), (q, k, v))
    grads_rowwise = torch.autograd.grad((rowwise * weights).sum(), (q, k, v))
    for a, b in zip(grads_rowwise, grads_full, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_packed_rows_layout_reaches_every_layer_and_unshared_batches_keep_sdpa():
    from transformers import AttentionInterface

    model = tiny_lora_llama(packed_attention.NAME)
    seen = []

    def spy(module, *args, **kwargs):
        seen.append(packed_attention.LAYOUT_KEYWORD in kwargs)
        return packed_attention.packed_sdpa(module, *args, **kwargs)

    AttentionInterface.register(packed_attention.NAME, spy)
    try:
        examples = rows(INSTRUCTION)
        packed_loss(model, make_batch(examples, 0, torch.device("cpu"), shared=len(INSTRUCTION)))
        assert seen == [True, True]  # both layers took the row-by-row path
        seen.clear()
        target_loss(model, make_batch(examples, 0, torch.device("cpu")), True)
        assert seen == [False, False]  # an unshared batch: transformers' SDPA
    finally:
        AttentionInterface.register(packed_attention.NAME, packed_attention.packed_sdpa)
