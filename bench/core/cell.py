"""Cells: one (model, bits, rank, task, gpus, eval_bits) configuration with all its settings.

Frozen values: any change to any field gives a new `key`, so a record can never be mistaken for
another configuration's. Pure (no torch).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields

from bench.core.records import Phase

BITS = (4, 8, 16)
OPTIMIZERS = ("zero_one_adam", "adamw")
# Switches of bench's own training loop, for the speed ablation (benchmarks/speed.py); the defaults
# are bench as shipped. loss_logits: "targets" = the vocabulary projection only at the positions that
# carry loss, "all" = the model's own `labels=` loss over every position (what the plain Trainer
# computes). batching: "length_grouped" = batches of similar lengths, "random" = shuffled rows.
LOSS_LOGITS = ("targets", "all")
BATCHINGS = ("length_grouped", "random")
PREFIX_REUSE = ("exact", "always", "off")  # train.prefix_reuse and eval.prefix_reuse
SCORERS = ("finlora", "strict", "finlora2025")
WEIGHTS = ("pretrained", "random")
PROMPT_FORMATS = ("raw", "chat")


@dataclass(frozen=True)
class ModelSpec:
    name: str  # the matrix's short name, used in ids and tables
    source: str  # "tiny", a hub id, or a local directory
    weights: str = "pretrained"  # pretrained | random (architecture only: resources, never accuracy)
    revision: str | None = None
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 4.0
    max_steps: int | None = None  # optimizer steps; caps epochs (smoke runs)
    train_limit: int | None = None  # use at most this many training examples
    lr: float = 1e-4
    warmup_steps: int = 0
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    batch_per_gpu: int = 16
    grad_accum: int = 1
    max_seq_len: int = 512
    optimizer: str = "zero_one_adam"
    zero_stage: int = 0
    # The training's compute dtype (bench.core.precision): "bf16" = bf16 where the hardware has it natively
    # (GPUs, avx512_bf16/AMX CPUs), fp32 elsewhere; "fp32" pins fp32; "bf16_always" bf16 even when slow.
    precision: str = "bf16"
    gradient_checkpointing: bool = False
    seed: int = 42
    time_limit_s: int | None = None
    # Added after records existed: left out of to_dict at their defaults, so older cells keep their keys.
    weight_decay: float = 0.0
    var_freeze_step: int | None = None  # 0/1 Adam; None = bench's min(1000, total steps / 4)
    method: str = "lora"  # lora | dora | rslora (bench.core.methods)
    loss_logits: str = "targets"  # targets | all (LOSS_LOGITS)
    batching: str = "length_grouped"  # length_grouped | random (BATCHINGS)
    # Linear warmup over this fraction of the optimizer steps, then constant (DeepSpeed WarmupLR, as
    # FinLoRA's --warmup_ratio); used instead of warmup_steps when set.
    warmup_ratio: float = 0.0
    # Training checkpoints (bench.workers.checkpoints): optimizer steps between two; None = a tenth of
    # the run, not before a minute of training and spaced by their own cost (checkpoints.SPACING), 0 =
    # none. checkpoint_keep: how many stay; keep_checkpoints: keep them after an ok end.
    checkpoint_every: int | None = None
    checkpoint_keep: int = 2
    keep_checkpoints: bool = False
    # Rows of a micro-batch that begin with the same tokens (a task's instruction) compute that span once
    # and share its keys/values (bench.workers.prefix; PREFIX_REUSE). "exact" (the default) shares where
    # that is exact: the same loss and LoRA gradients to fp32 rounding (tests/test_prefix_reuse.py), so
    # not with lora_dropout > 0 (one dropout mask would cover the span of every row instead of one per
    # row) nor with gradient checkpointing, and with the batches as they were. "always" shares with
    # dropout too and groups a multi-task set's rows by task (both change what is trained, so it enters
    # the key); "off" computes every row whole (the ablation).
    prefix_reuse: str = "exact"


@dataclass(frozen=True)
class EvalConfig:
    limit: int | None = None  # examples per task; None = the whole test split
    batch_size: int = 8
    max_new_tokens: int | None = None  # None = the task's own setting in tasks/
    scorer: str = "finlora"  # the scorer shown first; every record carries them all
    bootstrap: int = 1000
    time_limit_s: int | None = None
    # How outputs are decoded, cut and scored (bench.core.protocols). Fields added after records
    # existed: left out of to_dict at their defaults, so older cells keep their keys.
    protocol: str = "bench"
    seed: int | None = None  # sampling seed; None = the protocol's default (recorded either way)
    precision: str = "bf16"  # the evaluation's compute dtype, as TrainConfig.precision (bench.core.precision)
    # The span every row of a generate() batch begins with, prefilled once (bench.workers.prefix).
    # "exact" (the default): at eval_bits 16, where the tokens are the same; not under 8 or 4 bits, where
    # a row's numbers depend on its batch (LLM.int8 outlier columns) and the span's pass is a batch of
    # one. "always": at every eval_bits; "off": every row prefilled whole (the ablation).
    prefix_reuse: str = "exact"
    # The cell's LoRA merged into the base's weights for its evaluation (bench.workers.merge): each
    # adapted layer runs one matmul instead of three. At eval_bits 16 only (merging into a quantized
    # base would requantize it). Off by default: W + s*B*A rounds differently from W*x + s*B*(A*x), so a
    # near-tie may decode another token (benchmarks/speed.py's merged side counts the rows); on, it
    # enters the key. The base is restored bit for bit before the next cell on it.
    merge_adapter: bool = False


LATER_EVAL_FIELDS = {
    "protocol": "bench", "seed": None, "precision": "bf16", "prefix_reuse": "exact", "merge_adapter": False,
}  # fmt: skip
LATER_TRAIN_FIELDS = {
    "weight_decay": 0.0, "var_freeze_step": None, "method": "lora",
    "loss_logits": "targets", "batching": "length_grouped", "warmup_ratio": 0.0,
    "checkpoint_every": None, "checkpoint_keep": 2, "keep_checkpoints": False, "prefix_reuse": "exact",
}  # fmt: skip
# How a training is kept safe, not what it computes: carried to the workers, never part of the key (a
# checkpoint written under one interval resumes a run under another; issue 22: "not part of the cell key").
OPERATIONAL_TRAIN_FIELDS = ("checkpoint_every", "checkpoint_keep", "keep_checkpoints")


@dataclass(frozen=True)
class TaskFile:
    """A user's task file that a cell trains or evaluates on (bench.core.tasks). Its content is in the
    cell key; where it lies is not, so a moved task folder keeps its cells."""

    name: str
    file: str  # absolute path: where workers read it (not in the key)
    sha256: str  # of the task file and of its local data files (in the key)


@dataclass(frozen=True)
class Cell:
    model: ModelSpec
    task: str  # a training set name (bench.core.catalog.training_sets())
    bits: int | None  # None = base model row (no adapter, evaluation only)
    rank: int | None
    gpus: int
    eval_bits: int
    train: TrainConfig | None
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Set by axes beyond the six above (batch, seed): "b8", "s1", "b8__s1". It names the cell; its
    # settings already differ in train, so the key differs too. Left out of to_dict when empty, which
    # keeps the keys (and so the records) of every cell made before such axes existed.
    variant: str = ""
    # Machines the training spans (gpus are split evenly over them). Left out of to_dict when 1, which
    # keeps the keys of every single-node cell; evaluation always runs on one node.
    nodes: int = 1
    # How a row's prompt reaches the model, in training and evaluation alike: "raw" (FinLoRA's text as
    # it is) or "chat" (the tokenizer's chat template around it, as lm-eval's --apply_chat_template).
    # Left out of to_dict when "raw", which keeps the keys of every cell made before it existed.
    prompt_format: str = "raw"
    # The user task files behind `task` (none for the built-in tasks). Left out of to_dict when empty.
    task_files: tuple[TaskFile, ...] = ()
    # The axis values the matrix's expansion set on this cell ((name, value), bench.core.axes): what
    # the report and the comparisons read. Not a setting of its own: out of the key and of equality.
    axes: tuple[tuple[str, object], ...] = field(default=(), compare=False)

    @property
    def gpus_per_node(self) -> int:
        return self.gpus // self.nodes

    @property
    def is_base(self) -> bool:
        return self.bits is None

    @property
    def config_label(self) -> str:
        if self.is_base:
            return "base"
        method = self.train.method if self.train else "lora"
        return f"{self.bits}bit-r{self.rank}" + ("" if method == "lora" else f"-{method}")

    @property
    def id(self) -> str:
        text = f"{self.model.name}__{self.task}__{self.config_label}__{self.gpus}gpu__eval{self.eval_bits}bit"
        text = f"{text}__{self.nodes}nodes" if self.nodes > 1 else text
        return f"{text}__{self.variant}" if self.variant else text

    @property
    def key(self) -> str:
        data = self.to_dict()
        for task_file in data.get("task_files", []):
            del task_file["file"]  # a locator, not content
        for name in OPERATIONAL_TRAIN_FIELDS if data["train"] is not None else ():
            data["train"].pop(name, None)
        return hashlib.sha256(canonical_json(data).encode()).hexdigest()[:16]

    @property
    def dirname(self) -> str:
        return f"{self.id}-{self.key}"

    def phases(self) -> tuple[Phase, ...]:
        return (Phase.EVAL,) if self.is_base else (Phase.TRAIN, Phase.EVAL)

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["axes"]
        if not data["task_files"]:
            del data["task_files"]
        if not data["variant"]:
            del data["variant"]
        for part, later in (("eval", LATER_EVAL_FIELDS), ("train", LATER_TRAIN_FIELDS)):
            for name, default in later.items():
                if data[part] is not None and data[part].get(name) == default:
                    del data[part][name]
        if data["nodes"] == 1:
            del data["nodes"]
        if data["prompt_format"] == "raw":
            del data["prompt_format"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> Cell:
        train = data.get("train")
        return cls(
            model=ModelSpec(**data["model"]),
            task=data["task"],
            bits=data["bits"],
            rank=data["rank"],
            gpus=data["gpus"],
            eval_bits=data["eval_bits"],
            train=None if train is None else _build(TrainConfig, train),
            eval=_build(EvalConfig, data["eval"]),
            variant=data.get("variant", ""),
            nodes=data.get("nodes", 1),
            prompt_format=data.get("prompt_format", "raw"),
            task_files=tuple(TaskFile(**t) for t in data.get("task_files", [])),
        )


def _build(cls, data: dict):
    known = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known}
    return cls(**values)


def canonical_json(data) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=list)
