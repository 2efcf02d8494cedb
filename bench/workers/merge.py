"""`eval.merge_adapter`: the cell's LoRA merged into the base's 16-bit weights for its evaluation.

Unmerged, each adapted layer computes W*x + s*B*(A*x): three matmuls and an add where the merged layer
computes one (W + s*B*A)*x. peft's merge_adapter() does the merge in place; its unmerge_adapter()
subtracts s*B*A again, which leaves the base off by a rounding step, and the evaluation worker reuses
one base for every cell on it. So the weights a merge changes are copied first and written back after
the cell: the next cell sees the base exactly as loaded. The copy costs the adapted layers' weights
once more in memory (q/k/v of an 8B model in bf16: 1.6 GB) for as long as a merged cell runs.
"""

from __future__ import annotations

import torch

SAVED = "_bench_unmerged_weights"  # the attribute holding the copies on the PeftModel


def merge_exactly(model) -> int:
    """Merge the active adapter into its base layers, keeping a copy of each weight it changes.
    Returns how many layers were merged."""
    from peft.tuners.lora import LoraLayer

    saved = {
        name: module.get_base_layer().weight.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, LoraLayer)
    }
    model.merge_adapter()
    setattr(model, SAVED, saved)
    return len(saved)


def unmerge_exactly(model) -> None:
    """Undo merge_exactly: peft unmerges (so its layers compute the adapter again), then every changed
    weight gets its copy back, bit for bit. Nothing to do on a model that was not merged."""
    saved = getattr(model, SAVED, None)
    if not saved:
        return
    model.unmerge_adapter()
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, weight in saved.items():
            modules[name].get_base_layer().weight.copy_(weight)
    delattr(model, SAVED)
