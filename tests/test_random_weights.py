"""`weights: random` builds the architecture from its config.json and trains through the real path."""

import json
from pathlib import Path

import pytest

from bench.core.matrix import parse
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step

pytestmark = pytest.mark.slow
ARCH = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "hidden_size": 128, "intermediate_size": 256,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 4096,
    "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False,
}  # fmt: skip


def test_random_weight_cell_trains_with_the_real_vocabulary_and_is_marked(tmp_path, data_dir, bench_cache):
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "config.json").write_text(json.dumps(ARCH))
    matrix = parse(
        {
            "models": {"rnd": {"source": str(arch), "weights": "random"}},
            "axes": {"model": ["rnd"], "bits": [4], "rank": [4], "task": ["fpb"]},
            "train": {"max_steps": 3, "train_limit": 64, "batch_per_gpu": 8},
        },
        tmp_path / "m.yaml",
    )
    launcher = Launcher(tmp_path / "results", data_dir, "m", echo=False)
    record = launcher(Step(matrix.cells[0], "train"))
    assert record.status == "ok", record.log_tail
    assert any(note.startswith("random weights: resources only") for note in record.notes)
    assert record.metrics["quantized_linear"] == {"Linear4bit": 14}
    # Embeddings and lm_head have the architecture's vocabulary, whatever the tokenizer's size.
    built = next((bench_cache / "models").glob("random-arch-*"))
    assert json.loads((built / "config.json").read_text())["vocab_size"] == 4096
    assert record.metrics["total_params"] > 4096 * 128 * 2
    # No weights on disk: they are drawn while from_pretrained loads them.
    assert not [p.name for p in built.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]


@pytest.mark.parametrize("bits", [4, 8, 16])
def test_random_weights_load_through_from_pretrained_and_bitsandbytes(tmp_path, data_dir, bench_cache, bits):
    import torch

    from bench.core.cell import ModelSpec
    from bench.models.loading import load_model, quantized_linear_counts, resolve_source

    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "config.json").write_text(json.dumps(ARCH))
    spec = ModelSpec(name="rnd", source=str(arch), weights="random")
    source = resolve_source(spec, data_dir)
    first, again = (load_model(source, spec, bits, torch.float32, {"": "cpu"}) for _ in range(2))
    expected = {4: {"Linear4bit": 14}, 8: {"Linear8bitLt": 14}, 16: {}}[bits]
    assert quantized_linear_counts(first) == expected
    assert first.lm_head.weight.shape == (4096, 128)  # the architecture's vocabulary, in 16/32-bit
    norm = first.model.layers[0].input_layernorm.weight
    assert torch.equal(norm, torch.ones_like(norm))
    embed = first.model.embed_tokens.weight
    assert 0.015 < embed.std().item() < 0.025  # config.initializer_range
    assert not torch.equal(embed, first.lm_head.weight)  # independent draws
    # Seeded per tensor: two loads give the same model, so cells compare like for like.
    pairs = zip(first.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(first(ids).logits).all()
    assert first.generation_config.pad_token_id is not None


def test_shipped_architectures_validate_and_unknown_ones_are_refused(tmp_path):
    from bench.core.matrix import MatrixError, load

    repo = Path(__file__).resolve().parents[1]
    assert all(c.model.weights == "random" for c in load(repo / "matrices" / "table1.yaml").cells)
    with pytest.raises(MatrixError, match="random weights need an architecture"):
        parse(
            {"models": {"r": {"source": "llama-9", "weights": "random"}},
             "axes": {"model": ["r"], "bits": [4], "rank": [4], "task": ["fpb"]}},
            tmp_path / "m.yaml",
        )  # fmt: skip
