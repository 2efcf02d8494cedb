"""The training recipes of a matrix's cells, each distinct one printed once with the cells that use it
(`bench plan`): so a reader sees what each row will train with before any GPU time is spent. Pure."""

from __future__ import annotations

from bench.core.cell import Cell


def recipe_text(cell: Cell) -> str:
    """One line: LoRA, optimizer, schedule, batch, data of a trained cell."""
    t = cell.train
    if t.warmup_ratio:
        warmup = f"warmup {t.warmup_ratio:.0%} (WarmupLR), then constant"
    else:
        warmup = f"warmup {t.warmup_steps} steps, then constant" if t.warmup_steps else "constant lr"
    length = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs"
    return (
        f"{t.method} alpha {t.lora_alpha} dropout {t.lora_dropout:g} on {','.join(t.target_modules)}; "
        f"{t.optimizer} (ZeRO {t.zero_stage}) lr {t.lr:g} weight decay {t.weight_decay:g}, {warmup}; "
        f"{t.precision}; global batch {t.batch_per_gpu * t.grad_accum * cell.gpus} "
        f"({t.batch_per_gpu} x GA {t.grad_accum} x {cell.gpus} GPU); {length}; max_seq_len {t.max_seq_len}"
        f"{'; gradient checkpointing' if t.gradient_checkpointing else ''}"
    )


def recipe_lines(cells: list[Cell]) -> list[str]:
    """ "recipe A: ..." then the training sets and configurations that use it."""
    groups: dict[str, list[str]] = {}
    for cell in cells:
        if cell.train is not None:
            groups.setdefault(recipe_text(cell), []).append(
                f"{cell.model.name} {cell.task} {cell.config_label}"
            )
    out = [f"{len(groups)} training recipe{'s' * (len(groups) != 1)}:"]
    for i, (text, users) in enumerate(groups.items()):
        out.append(f"  recipe {chr(65 + i) if i < 26 else i}: {text}")
        out.append(f"    cells: {', '.join(users)}")
    return out
