"""Model FLOPs utilisation of a training run: the FLOP model of its LoRA step (bench.core.flops), fed
every batch's real row lengths and logit positions, against the device's peak (bench.workers.peak_probe).
"""

from __future__ import annotations

import torch

from bench.core.architecture import shape
from bench.core.flops import NO_CHECKPOINTING, NON_REENTRANT, REENTRANT, FlopCount, LoraStep
from bench.core.peaks import utilisation
from bench.workers.examples import IGNORE, Encoded
from bench.workers.peak_probe import device_peak


def lora_step(model, cell) -> tuple[LoraStep | None, str | None]:
    """The FLOP model of this cell's step on this (peft-wrapped) model, or None and why not."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cfg = cell.train
    try:
        arch = shape(base.config.to_dict())
        return LoraStep(arch, cell.rank, tuple(cfg.target_modules), checkpointing_mode(base)), None
    except (KeyError, ValueError) as exc:  # a non-Llama config or a target the model does not know
        return None, f"FLOPs not counted: {type(exc).__name__}: {exc}"


def checkpointing_mode(model) -> str:
    """How the model's layers are checkpointed, as transformers set them up: peft's kbit preparation passes
    no use_reentrant (torch then reruns whole layers), transformers 5 on its own passes False."""
    for module in model.modules():
        func = getattr(module, "_gradient_checkpointing_func", None)
        if getattr(module, "gradient_checkpointing", False) and func is not None:
            reentrant = getattr(func, "keywords", {}).get("use_reentrant")
            return NON_REENTRANT if reentrant is False else REENTRANT
    return NO_CHECKPOINTING


def loss_positions(example: Encoded) -> int:
    """Positions whose next token carries loss: where bench's sliced loss computes logits."""
    return sum(label != IGNORE for label in example.labels[1:])


def batch_flops(
    step: LoraStep | None, examples: list[Encoded], sliced: bool, shared: int = 0, packed: bool = False
) -> FlopCount:
    """The FLOPs computed: with a `shared` span (bench.workers.prefix), the span once and each row's
    remainder attending to it, not the span in every row. The cached prefix pass computes one logit
    row for the span; the `packed` row computes none there (no loss position lies in the span)."""
    if step is None:
        return FlopCount()
    lengths = [len(e.input_ids) - shared for e in examples]
    # Unsliced, the model computes logits at every position (the real ones count; padding is waste).
    positions = sum(loss_positions(e) for e in examples) if sliced else sum(lengths)
    rest = step.batch(lengths, positions, attended=shared)
    return step.batch([shared], 0 if packed else 1) + rest if shared else rest


def utilisation_fields(
    flops: FlopCount, tokens: float, seconds: float, world: int, device: torch.device, dtype: torch.dtype,
    note: str | None,
) -> dict:  # fmt: skip
    """TrainMetrics' FLOPs fields: per token (total and parts), achieved per device, the peak and MFU."""
    peak = device_peak(device, dtype)
    if not flops.total or not tokens or not seconds:
        return {"flops_per_token": None, "flops_per_token_parts": None, "achieved_flops_per_s": None,
                "peak_flops_per_s": peak.flops_per_s, "peak_source": peak.source, "mfu": None,
                "flops_note": note or "no tokens trained"}  # fmt: skip
    per_token = flops.total / tokens
    achieved, mfu = utilisation(per_token, tokens / seconds, world, peak)
    return {
        "flops_per_token": round(per_token),
        "flops_per_token_parts": flops.per(tokens),
        "achieved_flops_per_s": round(achieved),
        "peak_flops_per_s": None if peak.flops_per_s is None else round(peak.flops_per_s),
        "peak_source": peak.source,
        "mfu": None if mfu is None else round(mfu, 4),
        "flops_note": note,
    }
