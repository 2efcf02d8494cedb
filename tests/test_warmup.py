"""warmup_ratio: FinLoRA's --warmup_ratio 0.03 into DeepSpeed's WarmupLR; old cells keep their keys."""

from __future__ import annotations

from dataclasses import replace

from bench.core.cell import Cell, ModelSpec, TrainConfig
from bench.workers.optim import deepspeed_config, warmup_steps


def test_warmup_ratio_gives_warmup_lr_over_that_share_of_the_steps_rounded_up():
    cfg = TrainConfig(warmup_ratio=0.03)
    assert warmup_steps(cfg, 1000) == 30 and warmup_steps(cfg, 101) == 4
    scheduler = deepspeed_config(cfg, 4, "adamw", 1000)["scheduler"]
    params = {"warmup_min_lr": 0, "warmup_max_lr": cfg.lr, "warmup_num_steps": 30}
    assert scheduler == {"type": "WarmupLR", "params": params}
    assert warmup_steps(TrainConfig(warmup_steps=10), 1000) == 10
    assert "scheduler" not in deepspeed_config(TrainConfig(), 1, "adamw", 1000)


def test_warmup_ratio_stays_out_of_the_cell_key_at_its_default():
    cell = Cell(ModelSpec("tiny", "tiny"), "fpb", 4, 4, 1, 8, TrainConfig())
    assert "warmup_ratio" not in cell.to_dict()["train"]
    changed = replace(cell, train=TrainConfig(warmup_ratio=0.03))
    assert changed.to_dict()["train"]["warmup_ratio"] == 0.03 and changed.key != cell.key
    assert Cell.from_dict(changed.to_dict()) == changed
