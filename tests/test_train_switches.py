"""The training loop's ablation switches (train.loss_logits, train.batching): off, bench computes
the same loss and gradients, only slower; the defaults leave every existing cell key as it was."""

from __future__ import annotations

import pytest
import torch

from bench.core.matrix import MatrixError, parse
from bench.workers.examples import IGNORE, Encoded, keeps_logits, make_batch, random_batches, target_loss


def tiny_lora_llama():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    return get_peft_model(model, lora)


def examples() -> list[Encoded]:
    rows = [(list(range(3, 14)), 2), (list(range(20, 25)), 1), (list(range(40, 57)), 3)]
    out = []
    for prompt, n_target in rows:
        target = [60 + i for i in range(n_target)] + [2]
        out.append(Encoded(prompt + target, [IGNORE] * len(prompt) + target, False))
    return out


def loss_and_grads(model, sliced: bool):
    model.zero_grad()
    batch = make_batch(examples(), pad_id=0, device=torch.device("cpu"))
    loss = target_loss(model, batch, sliced)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads


def test_loss_logits_all_gives_the_same_loss_and_gradients_as_targets_only():
    model = tiny_lora_llama()
    if not keeps_logits(model):
        pytest.skip("this transformers has no per-row logits_to_keep: bench always computes all logits")
    sliced_loss, sliced_grads = loss_and_grads(model, sliced=True)
    full_loss, full_grads = loss_and_grads(model, sliced=False)
    assert sliced_loss == pytest.approx(full_loss, rel=1e-5)
    assert sliced_grads.keys() == full_grads.keys() and sliced_grads
    for name, grad in sliced_grads.items():
        torch.testing.assert_close(grad, full_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_random_batches_cover_every_row_once_and_ignore_length():
    lengths = [i % 7 + 1 for i in range(50)]
    batches = random_batches(lengths, 8, seed=3, world=2)
    assert len(batches) == 6  # 50 // 8 = 6 full batches (and a short one of 2 dropped), a multiple of 2
    flat = [i for b in batches[:6] for i in b]
    assert len(flat) == len(set(flat)) == 48
    assert random_batches(lengths, 8, seed=3, world=2) == batches
    assert any(sorted(lengths[i] for i in b) != [lengths[i] for i in b] for b in batches)


def matrix(train: dict) -> dict:
    return {
        "name": "switches",
        "models": {"m": {"source": "tiny"}},
        "axes": {"model": ["m"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
        "train": {"max_steps": 2, **train},
    }


def test_switch_defaults_keep_cell_keys_and_other_values_change_them(tmp_path):
    (shipped,) = parse(matrix({}), tmp_path / "m.yaml").cells
    (explicit,) = parse(
        matrix({"loss_logits": "targets", "batching": "length_grouped"}), tmp_path / "m.yaml"
    ).cells
    (ablated,) = parse(matrix({"loss_logits": "all", "batching": "random"}), tmp_path / "m.yaml").cells
    assert "loss_logits" not in shipped.to_dict()["train"] and shipped.key == explicit.key
    assert ablated.key != shipped.key
    assert ablated.train.loss_logits == "all" and ablated.train.batching == "random"


@pytest.mark.parametrize("key,value", [("loss_logits", "some"), ("batching", "sorted")])
def test_unknown_switch_values_are_refused_by_name(tmp_path, key, value):
    with pytest.raises(MatrixError, match=f"train.{key}"):
        parse(matrix({key: value}), tmp_path / "m.yaml")
