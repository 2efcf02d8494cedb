"""LoRA methods: plain LoRA and the two variants FinLoRA's 2025 rows add, as peft's own switches.

Pure (no torch): the matrix validates method names here, and the workers ask `refusal()` before they
load a model, so a combination that peft or bitsandbytes cannot run becomes a record that says which
library fails and what to use instead, not a traceback from deep inside a forward pass.
"""

from __future__ import annotations

DEFAULT = "lora"
# method -> the LoraConfig switches that make it (peft >= 0.9 has both)
METHODS: dict[str, dict[str, bool]] = {
    "lora": {},
    "dora": {"use_dora": True},  # weight-decomposed LoRA (Liu et al., 2024)
    "rslora": {"use_rslora": True},  # rank-stabilised scaling alpha/sqrt(r) (Kalajdzievski, 2023)
}

# (method, base bits, device type) -> why it cannot run. Measured on this project's stack (peft 0.21.2,
# bitsandbytes 0.50.2, torch 2.13 CPU): a DoRA layer on a Linear8bitLt base runs one forward pass, then
# bitsandbytes' int8 matmul finds the weight scales (state.SCB) gone and raises
# "'NoneType' object has no attribute 'dtype'", in training and in evaluation alike. 4-bit and 16-bit
# bases work with DoRA, and rsLoRA works with every base. Not checked on a GPU: not refused there.
UNSUPPORTED: dict[tuple[str, int, str], str] = {
    ("dora", 8, "cpu"): (
        "DoRA on an 8-bit (LLM.int8) base fails on CPU: bitsandbytes' CPU int8 matmul loses the weight "
        "scales after peft's DoRA layer dequantizes the weight (peft 0.21 + bitsandbytes 0.50); on CPU "
        "use bits and eval_bits 4 or 16 for DoRA cells, or run them on a GPU"
    ),
}


def lora_switches(method: str) -> dict[str, bool]:
    """The keyword arguments for peft.LoraConfig that select `method`."""
    if method not in METHODS:
        raise ValueError(f"unknown LoRA method {method!r}; known: {', '.join(METHODS)}")
    return dict(METHODS[method])


def refusal(method: str, bits: int | None, device_type: str, phase: str) -> str | None:
    """Why `method` cannot run on a `bits` base on this device type (phase names the step), or None."""
    reason = UNSUPPORTED.get((method, bits or 16, device_type))
    return f"{phase} refused: {reason}" if reason else None
