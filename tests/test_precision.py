"""The compute dtype: picked from the cell's request and the hardware's flags in one pure function (so
these tests hold on every CPU kind), stated with its reason, and the lm_head hook that keeps bf16
`generate` on its fast kernel without changing a token."""

from __future__ import annotations

import pytest
import torch

from bench.core.cell import EvalConfig
from bench.core.precision import choose
from bench.planning.calibration import Target

# /proc/cpuinfo flags of the two CPU kinds STACK-NOTES measured (the relevant part of each).
AVX2_ONLY = {"fpu", "sse4_2", "avx", "avx2", "fma", "f16c"}
AVX512_BF16 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512_bf16"}  # AMD EPYC: no AMX
AMX = AVX512_BF16 | {"amx_tile", "amx_bf16", "amx_int8"}


def test_an_avx2_only_cpu_computes_in_fp32_and_says_why():
    chosen = choose("bf16", "cpu", AVX2_ONLY, mkldnn_bf16=False)
    assert chosen.dtype == "fp32" and chosen.warning is None
    assert chosen.reason == (
        "fp32: CPU lacks native bf16 (no avx512_bf16 or amx_bf16); "
        "bf16 matmuls are ~75x slower than fp32 on AVX2-only cores"
    )


@pytest.mark.parametrize("flags, named", [(AVX512_BF16, "avx512_bf16"), (AMX, "avx512_bf16/amx_bf16")])
def test_a_native_bf16_cpu_computes_in_bf16(flags, named):
    for mkldnn in (True, None):  # None: the planner, which knows the flags only
        chosen = choose("bf16", "cpu", flags, mkldnn)
        assert (chosen.dtype, chosen.reason) == ("bf16", f"bf16: CPU has native bf16 ({named})")


def test_flags_without_torchs_bf16_kernels_stay_fp32():
    chosen = choose("bf16", "cpu", AMX, mkldnn_bf16=False)
    assert chosen.dtype == "fp32" and "torch's oneDNN has no bf16 kernels" in chosen.reason


def test_pins_are_honoured_everywhere_and_a_slow_one_is_warned_about():
    for device, flags in (("cpu", AVX2_ONLY), ("cpu", AMX), ("cuda", ())):
        assert choose("fp32", device, flags).dtype == "fp32"
        assert choose("fp32", device, flags).reason == "fp32: the cell pins fp32"
        assert choose("bf16_always", device, flags).dtype == "bf16"
    assert choose("bf16", "cuda").reason == "bf16: GPU"
    slow = choose("bf16_always", "cpu", AVX2_ONLY, mkldnn_bf16=False)
    assert slow.reason.startswith("bf16: the cell pins bf16_always; CPU lacks native bf16")
    assert "~75x slower" in slow.warning
    assert choose("bf16_always", "cpu", AMX, True).warning is None
    with pytest.raises(ValueError, match="'fp8' is not one of bf16, fp32, bf16_always"):
        choose("fp8", "cpu")


def test_the_planner_predicts_with_the_dtype_the_workers_pick():
    assert Target("cpu").precision("train") == "fp32"  # flags unknown: no native bf16 assumed
    assert Target("cpu", frozenset(AVX2_ONLY)).precision("train") == "fp32"
    assert Target("cpu", frozenset(AMX)).precision("eval") == "bf16"
    assert Target("cpu", frozenset(AMX)).precision("eval", "fp32") == "fp32"
    assert Target("NVIDIA H100 80GB HBM3").precision("train") == "bf16"


def test_eval_precision_at_its_default_keeps_cell_keys_and_a_pin_changes_them():
    from bench.core.cell import Cell, ModelSpec

    base = Cell(ModelSpec("tiny", "tiny"), "fpb", None, None, 1, 16, None)
    assert "precision" not in base.to_dict()["eval"]  # the keys of every cell made before it existed
    pinned = Cell(ModelSpec("tiny", "tiny"), "fpb", None, None, 1, 16, None, EvalConfig(precision="fp32"))
    assert pinned.key != base.key and Cell.from_dict(pinned.to_dict()) == pinned


def test_an_evaluation_worker_shares_its_base_only_at_one_precision():
    from bench.core.cell import Cell, ModelSpec
    from bench.orchestration.scheduler import base_of

    detected = Cell(ModelSpec("tiny", "tiny"), "fpb", None, None, 1, 16, None)
    pinned = Cell(ModelSpec("tiny", "tiny"), "fpb", None, None, 1, 16, None, EvalConfig(precision="fp32"))
    assert base_of(detected) != base_of(pinned)


def test_ci_pins_fp32_and_smoke_keeps_the_detected_default():
    from pathlib import Path

    from bench.core.matrix import load

    repo = Path(__file__).resolve().parents[1]
    for cell in load(repo / "matrices" / "ci.yaml").cells:
        assert cell.eval.precision == "fp32" and (cell.train is None or cell.train.precision == "fp32")
    for cell in load(repo / "matrices" / "smoke.yaml").cells:
        assert cell.eval.precision == "bf16" and (cell.train is None or cell.train.precision == "bf16")


def generate(model, ids, mask) -> torch.Tensor:
    return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, do_sample=False,
                          pad_token_id=0)  # fmt: skip


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_contiguous_head_hook_changes_no_generated_token(tiny_dir, data_dir, dtype):
    """bf16 runs on every CPU (slowly on AVX2-only ones; the tiny model takes well under a second)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.core.data import load_rows
    from bench.workers.evaluate import contiguous_head_input

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    tokenizer.pad_token, tokenizer.padding_side = tokenizer.pad_token or tokenizer.eos_token, "left"
    rows = load_rows(data_dir / "fpb" / "test.jsonl")[:6]
    batch = tokenizer([r["context"] for r in rows], return_tensors="pt", padding=True)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=dtype).eval()
    seen = []
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        stock = generate(model, batch["input_ids"], batch["attention_mask"])
        assert not seen[0].is_contiguous()  # prefill's last-position slice: what the hook is for
        seen.clear()
        contiguous_head_input(model)
        contiguous_head_input(model)  # a re-used base: one hook, not two
        hooked = generate(model, batch["input_ids"], batch["attention_mask"])
    assert all(x.is_contiguous() for x in seen) and len(model.get_output_embeddings()._forward_pre_hooks) == 1
    assert torch.equal(stock, hooked)
