"""The FLOP model of a LoRA step (bench.core.flops): a hand count for a tiny config, and torch's own
FLOP counter on a tiny random Llama trained the way bench trains it (frozen base, LoRA, logits only at
the loss positions)."""

from __future__ import annotations

import pytest

from bench.core.architecture import Shape, shape
from bench.core.flops import NO_CHECKPOINTING, NON_REENTRANT, REENTRANT, FlopCount, LoraStep

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 300}  # fmt: skip
QKV = ("q_proj", "k_proj", "v_proj")


def test_a_tiny_step_by_hand():
    """One row of 10 tokens, logits at 2 positions, LoRA r4 on q/k/v, no checkpointing."""
    step = LoraStep(shape(TINY), rank=4, targets=QKV)
    count = step.batch([10], logit_positions=2)
    # Per layer per token, multiply-adds: q 64x64, k and v 64x32, o 64x64, gate/up/down 64x128 = 36864.
    assert count.base_forward == 2 * 36864 * 2 * 10
    # Input gradients everywhere but layer 0's q/k/v (the embedding output does not require grad).
    assert count.base_input_grads == (2 * 36864 + 2 * (36864 - 4096 - 2048 - 2048)) * 10
    # LoRA q (64->4->64): forward 1024, weight grads 1024, B's dX 512, A's dX 512 (layer 1 only);
    # k and v (64->4->32): 768, 768, 256, 512 (layer 1 only).
    layer0 = (1024 + 1024 + 512) + 2 * (768 + 768 + 256)
    assert count.lora == (layer0 + (layer0 + 3 * 512)) * 10
    # Attention per layer: 4 n^2 (heads x head_dim) forward, twice that backward (q/k/v all train in layer 0).
    assert count.attention == 2 * 3 * 4 * 10 * 10 * 64
    assert count.lm_head == 4 * 64 * 300 * 2 and count.recompute == 0
    assert count.total == 3_230_720
    assert count.per(10)["lm_head"] == 15_360.0


def test_counts_add_over_batches_and_attention_uses_real_lengths():
    step = LoraStep(shape(TINY), rank=4, targets=QKV)
    together = step.batch([10, 20], 4)
    apart = step.batch([10], 2) + step.batch([20], 2)
    assert together == apart
    # 10 + 20 tokens, not two rows padded to 20: attention grows with the sum of squares.
    assert together.attention == step.batch([10], 0).attention * (1 + 4)


def test_checkpointing_adds_a_recompute_and_input_grads_from_the_embedding():
    arch = shape(TINY)
    plain = LoraStep(arch, 4, QKV).batch([10], 2)
    full = LoraStep(arch, 4, QKV, REENTRANT).batch([10], 2)
    early = LoraStep(arch, 4, QKV, NON_REENTRANT).batch([10], 2)
    assert full.base_input_grads == plain.base_forward  # layer 0's q/k/v now need dX too
    # Reentrant: every layer's forward again (linears, LoRA, attention: a third of the attention count).
    assert full.recompute == plain.base_forward + lora_forward(arch) * 10 + plain.attention / 3
    assert full.recompute - early.recompute == 2 * 128 * 64 * 2 * 10  # frozen down_proj not rerun


def lora_forward(arch: Shape) -> int:
    """LoRA forward per token over all layers for r4 on q/k/v."""
    return arch.layers * sum(2 * 4 * sum(arch.linears()[m]) for m in QKV)


def test_unknown_targets_and_modes_are_refused():
    with pytest.raises(ValueError, match="no FLOP model for LoRA targets"):
        LoraStep(shape(TINY), 4, ("lm_head",))
    with pytest.raises(ValueError, match="checkpointing"):
        LoraStep(shape(TINY), 4, QKV, "yes")


def test_smollm2_step_is_about_four_times_the_linear_weights():
    """SmolLM2-135M (576 hidden, 30 layers, 9/3 heads, 49152 vocab), FPB-like rows: 80 tokens, 2 logits."""
    arch = Shape(
        hidden=576, intermediate=1536, layers=30, heads=9, kv_heads=3, head_dim=64, vocab=49152, tied=True
    )
    linear = arch.layers * sum(d_in * d_out for d_in, d_out in arch.linears().values())
    per_token = LoraStep(arch, 4, QKV).batch([80] * 8, 16).total / 640
    assert linear == 106_168_320
    assert 4 * linear < per_token < 4.3 * linear  # frozen base: 4N, not 6N; attention and lm_head on top


CASES = [
    (QKV, NO_CHECKPOINTING),
    (QKV, REENTRANT),  # what peft's prepare_model_for_kbit_training sets up (bench's 4/8-bit cells)
    (QKV, NON_REENTRANT),  # transformers 5's own default (bench's 16-bit cells)
    (("v_proj",), NO_CHECKPOINTING),  # layer 0: only dV in the attention backward
    (("o_proj", "up_proj"), NO_CHECKPOINTING),
    (("down_proj",), NON_REENTRANT),
]


@pytest.mark.parametrize(("targets", "checkpointing"), CASES)
def test_the_model_matches_torchs_flop_counter(targets, checkpointing):
    """torch.utils.flop_counter counts every matmul autograd runs. Eager attention, because the counter
    does not see CPU's fused SDPA kernel. The model is exact here (tolerance: float rounding only)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY, max_position_embeddings=64, attn_implementation="eager"))
    model.config.use_cache = False
    model.requires_grad_(False)
    if checkpointing != NO_CHECKPOINTING:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": checkpointing == REENTRANT}
        )
        model.enable_input_require_grads()  # as bench's worker and peft's kbit preparation do
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=list(targets))
    )
    model.train()
    rows, n = 3, 20
    ids = torch.randint(0, TINY["vocab_size"], (rows, n))
    positions = torch.tensor([[n - 3, n - 2]] * rows)  # as bench's sliced loss: 2 logit positions per row
    with FlopCounterMode(display=False) as counter:
        logits = model(input_ids=ids, logits_to_keep=positions).logits
        logits.float().logsumexp(-1).mean().backward()
    from bench.workers.utilisation import checkpointing_mode

    assert checkpointing_mode(model) == checkpointing  # what the worker reads off the model
    step = LoraStep(shape(model.get_base_model().config.to_dict()), 4, targets, checkpointing)
    assert step.batch([n] * rows, rows * 2).total == pytest.approx(counter.get_total_flops(), rel=1e-9)


def test_flop_count_parts_per_token():
    count = FlopCount(base_forward=10.0, lora=5.0)
    assert count.total == 15.0 and count.per(5)["base_forward"] == 2.0
