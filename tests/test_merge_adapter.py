"""eval.merge_adapter: the merged layers compute the adapter (to rounding), the base comes back bit for
bit for the next cell on it, and the matrix accepts it at eval_bits 16 only."""

from __future__ import annotations

import pytest
import torch

from bench.core.matrix import MatrixError, parse
from bench.workers.evaluate import with_adapter
from bench.workers.merge import merge_exactly, unmerge_exactly


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def save_adapter(base, folder, seed: int):
    """A LoRA adapter with non-zero B (peft's init_lora_weights=False), saved where with_adapter reads."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj"],
                      init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    peft_model = get_peft_model(base, lora)
    peft_model.save_pretrained(folder)
    return peft_model.unload()  # the base without the adapter's layers


def cells(tmp_path, merge: bool):
    raw = {
        "name": "m", "models": {"t": {"source": "tiny"}},
        "axes": {"model": ["t"], "quant": [{"bits": 16, "rank": 4}], "task": ["fpb"], "seed": [1, 2],
                 "eval_bits": [16]},
        "eval": {"merge_adapter": merge},
    }  # fmt: skip
    return parse(raw, tmp_path / "m.yaml").cells


def weights(model) -> dict[str, torch.Tensor]:
    """The base's own weights by their unwrapped names (peft files them under ".base_layer")."""
    from peft import PeftModel

    inner = model.get_base_model() if isinstance(model, PeftModel) else model
    state = inner.state_dict()
    return {k.replace(".base_layer", ""): v.detach().clone() for k, v in state.items() if "lora_" not in k}


def test_a_merged_adapter_computes_the_same_logits_and_the_base_comes_back_exactly(tmp_path):
    from peft import PeftModel

    base = save_adapter(tiny_llama(), tmp_path / "a", seed=1)
    model = PeftModel.from_pretrained(base, tmp_path / "a")
    ids = torch.randint(0, 97, (3, 12))
    with torch.no_grad():
        unmerged = model(input_ids=ids).logits
        before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
        assert merge_exactly(model) == 6  # q, k, v in each of the 2 layers
        merged = model(input_ids=ids).logits
        unmerge_exactly(model)
        again = model(input_ids=ids).logits
    assert not torch.equal(merged, model.get_base_model()(input_ids=ids).logits)  # the adapter is in it
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert torch.equal(again, unmerged)  # unmerged again: bit for bit what it computed before
    after = model.get_base_model().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_next_cell_on_a_base_sees_it_as_loaded_after_a_merged_cell(tmp_path):
    first, second = cells(tmp_path, merge=True)
    base = tiny_llama()
    loaded = weights(base)
    for cell, seed in ((first, 1), (second, 2)):
        save_adapter(base, tmp_path / cell.key / "adapter", seed)
    model, _ = with_adapter(base, first, tmp_path / first.key / "adapter")
    assert not all(torch.equal(loaded[k], v) for k, v in weights(model).items())  # merged
    model, _ = with_adapter(model, second, tmp_path / second.key / "adapter")
    model, _ = with_adapter(model, replace_base(first), tmp_path / "unused")  # the base row: adapters off
    now = weights(model)
    assert now.keys() == loaded.keys()
    assert all(torch.equal(loaded[k], now[k]) for k in loaded)


def replace_base(cell):
    """A base-row stand-in for `cell` (no training: with_adapter unloads every adapter)."""
    from dataclasses import replace

    return replace(cell, train=None, bits=None, rank=None)


def test_the_matrix_takes_a_merge_at_16_bits_only_and_keys_it(tmp_path):
    merged, unmerged = cells(tmp_path, merge=True), cells(tmp_path, merge=False)
    assert {c.key for c in merged}.isdisjoint(c.key for c in unmerged)
    raw = {"name": "m", "models": {"t": {"source": "tiny"}},
           "axes": {"model": ["t"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"], "eval_bits": [8]},
           "eval": {"merge_adapter": True}}  # fmt: skip
    with pytest.raises(MatrixError, match=r"eval\.merge_adapter.*eval_bits: \[16\]"):
        parse(raw, tmp_path / "m.yaml")
