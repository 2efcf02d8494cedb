"""A real tiny training run through the launcher: its record carries model FLOPs, achieved FLOP/s, the
peak it was measured against (where from) and MFU, and the report shows them."""

from __future__ import annotations

import pytest
import yaml

from bench.core.matrix import load
from bench.core.records import Phase, Status
from bench.orchestration.launch import Launcher
from bench.orchestration.runner import Step

MATRIX = {
    "name": "utilisation",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "train": {"max_steps": 2, "train_limit": 16, "batch_per_gpu": 8, "max_seq_len": 128, "optimizer": "adamw",
              "time_limit_s": 300, "lora_dropout": 0.0},
    "eval": {"limit": 8, "batch_size": 8},
}  # fmt: skip


def test_a_tiny_training_record_carries_flops_peak_and_mfu(tmp_path, data_dir, bench_cache, tiny_dir):
    path = tmp_path / "utilisation.yaml"
    path.write_text(yaml.safe_dump(MATRIX))
    (cell,) = load(path).cells
    record = Launcher(tmp_path / "results", data_dir, "utilisation", echo=False)(Step(cell, Phase.TRAIN))
    assert record.status == Status.OK, record.error
    m = record.metrics
    assert m["flops_per_token"] > 0 and m["flops_note"] is None
    assert sum(m["flops_per_token_parts"].values()) == pytest.approx(m["flops_per_token"], rel=1e-3)
    # Achieved is per device: FLOPs per real token x tokens/s (one CPU process here).
    assert m["achieved_flops_per_s"] == pytest.approx(m["flops_per_token"] * m["tokens_per_s"], rel=1e-3)
    # The peak was probed at the precision the training computed in (bf16 or fp32 as this CPU has it)
    assert m["peak_source"].startswith("probe: ") and f" {m['precision'].split()[0]} " in m["peak_source"]
    assert str(bench_cache / "peaks") in m["peak_source"]  # cached where the models are
    assert 0 < m["mfu"] < 1
    assert m["mfu"] == pytest.approx(m["achieved_flops_per_s"] / m["peak_flops_per_s"], abs=1e-4)
    # The FPB instruction is shared in its batches (train.prefix_reuse: exact, the default, without LoRA
    # dropout): said so, and counted once in the FLOPs above.
    assert m["prefix_reuse"] is True and m["prefix_reuse_note"] is None
    assert m["prefix_shared_batches"] == 1.0 and m["prefix_shared_tokens_mean"] >= 16


def test_logits_count_where_the_loop_computes_them():
    from bench.core.architecture import Shape
    from bench.core.flops import LoraStep
    from bench.workers.examples import IGNORE, Encoded
    from bench.workers.utilisation import batch_flops

    arch = Shape(
        hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, head_dim=16, vocab=300, tied=False
    )
    step = LoraStep(arch, 4, ("q_proj", "k_proj", "v_proj"))
    # Two rows: 5 and 3 tokens; the last two (label, EOS) of each carry loss.
    rows = [Encoded([1] * 5, [IGNORE] * 3 + [7, 0], False), Encoded([1] * 3, [IGNORE, 7, 0], False)]
    sliced, everywhere = batch_flops(step, rows, sliced=True), batch_flops(step, rows, sliced=False)
    assert sliced.lm_head == step.batch([5, 3], 4).lm_head  # bench: 2 loss positions per row
    assert everywhere.lm_head == step.batch([5, 3], 8).lm_head  # the plain loss: every real position
    assert sliced.total - sliced.lm_head == everywhere.total - everywhere.lm_head
    assert batch_flops(None, rows, True).total == 0  # no FLOP model (a non-Llama config): nothing counted
