"""Optimizer choice and the DeepSpeed config for a training cell."""

from __future__ import annotations

import importlib.util
import math
from importlib import metadata

import torch


def zero_one_adam_unavailable(device: torch.device) -> str | None:
    """Why DeepSpeed's 0/1 Adam cannot run here, or None if it can."""
    if device.type != "cuda":
        return "0/1 Adam needs CUDA GPUs with NCCL; this run is on CPU"
    if importlib.util.find_spec("deepspeed.runtime.fp16.onebit.zoadam") is None:
        version = metadata.version("deepspeed")
        return f"deepspeed {version} has no 0/1 Adam (removed in 0.19.7; pin deepspeed<0.19.7)"
    if importlib.util.find_spec("cupy") is None:
        return "0/1 Adam's NCCL backend needs cupy (e.g. cupy-cuda12x / cupy-cuda13x)"
    if not torch.distributed.is_nccl_available():
        return "this torch build has no NCCL"
    return None


def choose_optimizer(requested: str, device: torch.device) -> tuple[str, str | None]:
    """(optimizer used, reason for falling back or None). Never falls back silently."""
    if requested == "zero_one_adam":
        reason = zero_one_adam_unavailable(device)
        return ("adamw", reason) if reason else ("zero_one_adam", None)
    return requested, None


def deepspeed_config(cfg, world: int, optimizer: str, total_steps: int) -> dict:
    if optimizer == "zero_one_adam":
        opt = {
            "type": "ZeroOneAdam",
            "params": {
                "lr": cfg.lr,
                "weight_decay": cfg.weight_decay,
                "bias_correction": False,
                # Variance freezes after this many steps (DeepSpeed's tutorial uses ~1000 at scale; the
                # paper's config 1000); by default a quarter of a short run, so that it freezes at all.
                "var_freeze_step": cfg.var_freeze_step or max(1, min(1000, total_steps // 4)),
                "var_update_scaler": 16,
                "local_step_scaler": 1000,
                "local_step_clipper": 16,
                "cuda_aware": False,
                "comm_backend_name": "nccl",
            },
        }
    else:
        # torch_adam: the plain torch AdamW, no compiled DeepSpeed op needed (CPU and GPU alike).
        params = {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "torch_adam": True}
        opt = {"type": "AdamW", "params": params}
    config = {
        "train_micro_batch_size_per_gpu": cfg.batch_per_gpu,
        "gradient_accumulation_steps": cfg.grad_accum,
        "train_batch_size": cfg.batch_per_gpu * cfg.grad_accum * world,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": cfg.zero_stage},
        "optimizer": opt,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    warmup = warmup_steps(cfg, total_steps)
    if warmup:
        config["scheduler"] = {
            "type": "WarmupLR",
            "params": {"warmup_min_lr": 0, "warmup_max_lr": cfg.lr, "warmup_num_steps": warmup},
        }
    return config


def warmup_steps(cfg, total_steps: int) -> int:
    """Warmup steps: `warmup_ratio` of the run when set (rounded up, as transformers'
    TrainingArguments.get_warmup_steps fills DeepSpeed's "auto"), else `warmup_steps`."""
    ratio = getattr(cfg, "warmup_ratio", 0.0)
    return math.ceil(total_steps * ratio) if ratio else cfg.warmup_steps
