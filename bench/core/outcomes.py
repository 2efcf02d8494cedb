"""What a worker hands back: frozen outcome values, and the files in a cell's folder that carry them.

A worker writes `<phase>-outcome.json` once, atomically; the launcher reads it and builds the record.
The metric fields are the record's `metrics` keys (the report and the gate read them through
bench.core.metrics): a typo in a worker is then a TypeError at construction, not a silent blank column.
Pure (no torch).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.core.records import Phase, Status

STARTED = "eval-started"  # the evaluation worker's mark in a cell's folder: it began that cell
EVENT_PREFIX = "event: "  # a worker's progress event line on stdout: "event: {json}"


def outcome_path(cell_dir: Path, phase: Phase | str) -> Path:
    return Path(cell_dir) / f"{Phase(phase)}-outcome.json"


@dataclass(frozen=True)
class MemoryMetrics:
    """Per-GPU torch peaks and pynvml peaks; their sum over GPUs is the paper's figure."""

    gpu_mem_allocated_gb: list | None
    gpu_mem_reserved_gb: list | None
    gpu_mem_nvml_gb: list | None
    gpu_mem_sum_gb: float | None
    gpu_mem_null_reason: str | None  # why the GPU fields are null (no CUDA device, ...)
    peak_rss_gb: float


@dataclass(frozen=True)
class TrainMetrics:
    load_s: float
    train_s: float
    tokens_per_s: float
    examples_per_s: float
    steps: int
    examples_seen: int
    train_examples: int
    truncated_examples: int
    truncated_by_task: dict  # task -> training rows cut in the middle of their input (never the instruction)
    train_loss_first: float
    train_loss_last: float
    loss_curve: list  # [[step, loss], ...]
    trainable_params: int
    total_params: int
    model_bytes: int
    quantized_linear: dict
    optimizer: str
    optimizer_requested: str
    optimizer_fallback: str | None
    precision: str
    zero_stage: int
    world_size: int
    batch_per_gpu: int
    grad_accum: int
    device: str
    devices: list
    wall_hours: float
    gpu_hours: float | None
    adapter_bytes: int
    # Utilisation (bench.core.flops, bench.core.peaks); absent from records written before them.
    flops_per_token: float | None  # model FLOPs of the LoRA step per real token
    flops_per_token_parts: dict | None  # the same by part: base forward, input grads, LoRA, attention, ...
    achieved_flops_per_s: float | None  # per device
    peak_flops_per_s: float | None  # the device's peak at the compute dtype
    peak_source: str  # "table: ..." or "probe: ..., cached <path>", or why there is none
    mfu: float | None  # achieved / peak, a fraction
    flops_note: str | None  # why FLOPs were not counted
    memory: MemoryMetrics
    # Per optimizer step: wall seconds from the end of the previous step (the first from the loop's
    # start) and the real (non-pad) tokens it trained on; the gate's speed ratio reads these.
    step_s: list = field(default_factory=list)
    step_tokens: list = field(default_factory=list)
    # Prefix reuse (train.prefix_reuse, bench.workers.prefix), over rank 0's micro-batches of this attempt:
    # whether any shared a leading span, the share of batches that did, the mean span of those (tokens),
    # and why reuse was off where it was (None: on). Absent from records written before it.
    prefix_reuse: bool | None = None
    prefix_shared_batches: float | None = None
    prefix_shared_tokens_mean: float | None = None
    prefix_reuse_note: str | None = None
    # Checkpoints and resume (bench.workers.checkpoints). train_s, wall_hours and gpu_hours above are the
    # final attempt's; the *_all_attempts fields add the earlier attempts' time and tokens up to the
    # checkpoint this one resumed from (work an attempt lost after its last checkpoint is in its own record).
    resumed_from_step: int | None = None
    attempts: int = 1
    train_s_all_attempts: float | None = None
    tokens_all_attempts: float | None = None
    gpu_hours_all_attempts: float | None = None
    checkpoints_written: int = 0
    checkpoint_s: float = 0.0  # wall seconds spent writing them (inside train_s)
    # Why the training computed in `precision` (bench.core.precision): "bf16: CPU has native bf16 (...)".
    precision_reason: str | None = None


@dataclass(frozen=True)
class EvalMetrics:
    load_s: float
    base_load_s: float  # loading the shared base once, for every cell of the worker
    base_shared_by: int
    base_reused: bool
    eval_s: float
    examples: int
    s_per_example: float
    examples_per_s: float
    eval_bits: int
    device: str
    devices: list
    device_map: dict
    lm_eval: dict  # lm-eval's own results per task, as it reported them
    protocol: str  # the evaluation protocol (bench.core.protocols)
    memory: MemoryMetrics
    prompt_format: str = "raw"  # raw | chat (bench.core.cell.PROMPT_FORMATS): how the prompts were given
    # eval.prefix_reuse (bench.workers.prefix): generate() batches whose shared span was prefilled once,
    # and that span's mean length in tokens (None: no batch shared one, or reuse was off); and how many
    # prefill passes those spans took (one per distinct span: later batches reuse its keys/values).
    prefix_shared_batches: int | None = None
    prefix_shared_tokens_mean: float | None = None
    prefix_span_passes: int | None = None
    # The 16-bit parts' compute dtype, "bf16" or "fp32", and why (bench.core.precision).
    precision: str | None = None
    precision_reason: str | None = None
    adapter_merged: bool | None = None  # eval.merge_adapter: LoRA merged into the base (bench.workers.merge)


@dataclass(frozen=True)
class PlainMetrics:
    """The plain HF Trainer + peft script's run of a cell's training settings (bench.workers.plain)."""

    train_s: float
    tokens: int
    examples: int
    tokens_per_s: float
    examples_per_s: float
    steps: int
    train_loss_first: float | None
    train_loss_last: float | None
    padding: str
    torch_threads: int
    step_s: list = field(default_factory=list)  # as TrainMetrics.step_s
    step_tokens: list = field(default_factory=list)


def flat_metrics(metrics: TrainMetrics | EvalMetrics | PlainMetrics) -> dict:
    """The record's metrics dict: memory fields sit beside the others, as records have always had them."""
    data = asdict(metrics)
    return {**{k: v for k, v in data.items() if k != "memory"}, **data.get("memory", {})}


@dataclass(frozen=True)
class Outcome:
    """One cell's phase as a worker saw it: ok with metrics (and scores for evaluations), or not."""

    status: Status
    metrics: TrainMetrics | EvalMetrics | PlainMetrics | None = None
    scores: tuple = ()  # evaluation: one dict per (task, scorer)
    data: tuple = ()  # split provenance per task
    artifacts: dict = field(default_factory=dict)  # absolute paths; the launcher makes them relative
    notes: tuple = ()
    error: str | None = None

    def to_dict(self) -> dict:
        out = {"status": str(self.status), "scores": list(self.scores), "data": list(self.data),
               "artifacts": self.artifacts, "notes": list(self.notes)}  # fmt: skip
        if self.metrics is not None:
            out["metrics"] = flat_metrics(self.metrics)
        if self.error is not None:
            out["error"] = self.error
        return out

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(self.to_dict(), indent=1, sort_keys=True, default=str))
        os.replace(tmp, path)  # atomic: the launcher never reads half an outcome


def read_outcome(path: Path) -> dict:
    """The outcome file as written, or {} when the worker died before writing one."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
