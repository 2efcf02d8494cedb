"""Predicted training and evaluation time and GPU-hours per cell, before it runs: for `bench plan` and
beside each record (the report's predicted vs measured). Pure (no torch).

time = model FLOPs of the phase / (MFU x the device's peak x its GPUs). The FLOPs come from
bench.core.flops (training: a LoRA step per real token; evaluation: the base's forward over the prompt,
then per generated token) and the task data: rows x epochs (or max_steps x batch) at the rows' mean
length. The tokenizer is not loadable in the pure core, so lengths are the data's characters over a
characters-per-token figure: measured where the store has a training record of the same model and
task (its tokens/s over examples/s is tokens per row), else ~4 (the memory planner's); the basis says
which. The MFU and the peak come from bench.planning.calibration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from bench.core.architecture import Shape, shape
from bench.core.catalog import training_set
from bench.core.cell import Cell
from bench.core.data import DataError, load_splits
from bench.core.flops import NO_CHECKPOINTING, NON_REENTRANT, REENTRANT, LoraStep
from bench.core.records import Phase, RunRecord
from bench.core.store import Store
from bench.planning.calibration import Target, calibrated_mfu, target_peak
from bench.planning.planner import CHARS_PER_TOKEN, architecture
from bench.report.model import eval_tasks


@dataclass(frozen=True)
class Lengths:
    """Mean tokens per row: the prompt and the target (its label; + EOS where trained or generated)."""

    prompt: float
    target: float
    basis: str


@dataclass(frozen=True)
class PhaseTime:
    seconds: float | None  # None: no prediction (the basis says why)
    gpu_hours: float | None  # None on a CPU
    flops: float
    basis: str


@dataclass(frozen=True)
class TimePrediction:
    train: PhaseTime | None  # None for base rows
    eval: PhaseTime | None

    def to_metrics(self, phase: str) -> dict:
        part = self.train if phase == Phase.TRAIN else self.eval
        if part is None:
            return {}
        key = "predicted_train_s" if phase == Phase.TRAIN else "predicted_eval_s"
        seconds = None if part.seconds is None else round(part.seconds, 1)
        return {key: seconds, "predicted_time_basis": part.basis}


def mean_chars(rows: list[dict]) -> tuple[float, float]:
    if not rows:
        return 0.0, 0.0
    return (sum(len(r["context"]) for r in rows) / len(rows), sum(len(r["target"]) for r in rows) / len(rows))


def lengths(cell: Cell, rows: list[dict], records: list[RunRecord], train_chars: float) -> Lengths:
    """Mean prompt and target tokens of `rows`, at a characters-per-token figure measured or assumed
    (`train_chars`: the cell's training rows' mean characters, what a record's tokens per row measured)."""
    context, target = mean_chars(rows)
    per_token, basis = CHARS_PER_TOKEN, f"~{CHARS_PER_TOKEN:g} chars/token (assumed)"
    for r in reversed(records):
        m = r.metrics
        same = r.cell.get("model", {}).get("name") == cell.model.name and r.cell.get("task") == cell.task
        row = (m.get("tokens_per_s") or 0) / m["examples_per_s"] if m.get("examples_per_s") else 0  # per row
        if r.phase == Phase.TRAIN and same and row > 1 and train_chars:
            per_token = train_chars / (row - 1)  # less the EOS
            basis = f"{per_token:.2f} chars/token (measured: {cell.model.name} {cell.task} training record)"
            break
    return Lengths(context / per_token, target / per_token, basis)


def train_rows(cell: Cell, data_dir: Path) -> list[dict]:
    return [r for t in training_set(cell.task).train_tasks for r in load_splits(t, data_dir).train]


def checkpointing(cell: Cell) -> str:
    """peft's kbit preparation checkpoints reentrantly, transformers 5 on its own not (utilisation.py)."""
    if not cell.train.gradient_checkpointing:
        return NO_CHECKPOINTING
    return REENTRANT if cell.bits in (4, 8) else NON_REENTRANT


def train_flops(cell: Cell, arch: Shape, rows: int, length: Lengths) -> float:
    """Model FLOPs of the cell's whole training (the worker's step count, each row at the mean length)."""
    cfg = cell.train
    rows = min(rows, cfg.train_limit) if cfg.train_limit else rows
    batches_per_rank = rows // cfg.batch_per_gpu // cell.gpus
    steps = cfg.max_steps or math.ceil(cfg.epochs * batches_per_rank / cfg.grad_accum)
    examples = steps * cfg.grad_accum * cfg.batch_per_gpu * cell.gpus
    row = min(cfg.max_seq_len, length.prompt + length.target + 1)  # + EOS
    step = LoraStep(arch, cell.rank, tuple(cfg.target_modules), checkpointing(cell))
    return examples * step.batch([row], min(row, length.target + 1)).total


def forward_per_token(arch: Shape) -> float:
    """The base's linears, forward, per token (2 d_in d_out each); LoRA adds under 1% at these ranks."""
    return arch.layers * sum(2 * d_in * d_out for d_in, d_out in arch.linears().values())


def eval_flops(arch: Shape, prompt: float, generated: float) -> float:
    """One example's generation: the prompt's forward (attention over its square), logits at its last
    position, then each generated token's forward against the cache so far."""
    width, head = arch.heads * arch.head_dim, 2 * arch.hidden * arch.vocab
    prefill = prompt * forward_per_token(arch) + 4 * width * prompt**2 * arch.layers + head
    decode = generated * (forward_per_token(arch) + head + 4 * width * (prompt + generated / 2) * arch.layers)
    return prefill + decode


def eval_examples(cell: Cell, data_dir: Path) -> tuple[int, list[dict]]:
    """(examples the evaluation scores, all its test rows) over the cell's evaluation tasks."""
    rows, count = [], 0
    for task in eval_tasks(cell):
        test = load_splits(task, data_dir).test
        count += min(len(test), cell.eval.limit) if cell.eval.limit else len(test)
        rows += test
    return count, rows


def predict_times(
    cell: Cell, data_dir: Path | None, records: list[RunRecord], target: Target
) -> TimePrediction:
    """The cell's predicted phases on `target`, calibrated from `records` (the store before it ran)."""
    config = architecture(cell.model)
    why = "no local config.json" if config is None else "no data directory" if data_dir is None else None
    try:
        arch = None if why else shape(config)
        train = None if why else train_rows(cell, data_dir)
    except (KeyError, ValueError, DataError) as exc:
        why = f"{type(exc).__name__}: {exc}"
    if why:
        none = PhaseTime(None, None, 0.0, f"no prediction: {why}")
        return TimePrediction(None if cell.is_base else none, none)
    train_chars = sum(mean_chars(train))
    training = None
    if not cell.is_base:
        length = lengths(cell, train, records, train_chars)
        flops = _or_zero(lambda: train_flops(cell, arch, len(train), length))
        precision = target.precision(Phase.TRAIN, cell.train.precision)
        training = _phase(Phase.TRAIN, flops, cell.gpus, cell, records, target, precision, length.basis)
    count, test = eval_examples(cell, data_dir)
    length = lengths(cell, test, records, train_chars)
    flops = count * eval_flops(arch, length.prompt, length.target + 1)
    evaluation = _phase(Phase.EVAL, flops, cell.gpus_per_node, cell, records, target,
                        target.precision(Phase.EVAL, cell.eval.precision), length.basis)  # fmt: skip
    return TimePrediction(training, evaluation)


def _or_zero(count) -> float:
    try:
        return count()
    except ValueError:  # a LoRA target the FLOP model does not know
        return 0.0


def _phase(phase, flops, gpus, cell, records, target: Target, precision: str, length_basis: str) -> PhaseTime:
    """Seconds = FLOPs / (MFU x peak x devices computing at once; evaluation's layer split runs one)."""
    peak = target_peak(target, precision, records)
    if not flops or not peak.flops_per_s:
        why = "no FLOP model for this cell" if not flops else peak.source
        return PhaseTime(None, None, flops, f"no prediction: {why}")
    bits = cell.bits if phase == Phase.TRAIN else cell.eval_bits
    mfu = calibrated_mfu(records, target, phase, precision, cell.model.name, bits,
                         lambda r: record_mfu(r, peak.flops_per_s, records))  # fmt: skip
    parallel = gpus if phase == Phase.TRAIN and target.kind == "gpu" else 1
    seconds = flops / (mfu.value * peak.flops_per_s * parallel)
    hours = seconds * gpus / 3600 if target.kind == "gpu" else None
    basis = f"MFU {100 * mfu.value:.2g}% ({mfu.basis}) of {peak.source}; {length_basis}"
    return PhaseTime(seconds, hours, flops, basis)


def record_mfu(record: RunRecord, peak: float, records: list[RunRecord]) -> float | None:
    """A training record's own MFU; an evaluation's from its time and the FLOPs of its examples."""
    if record.phase == Phase.TRAIN:
        return record.metrics.get("mfu")
    m = record.metrics
    if not m.get("eval_s") or not m.get("examples"):
        return None
    try:
        cell = Cell.from_dict(record.cell)
        config = architecture(cell.model)
        if config is None:
            return None
        data_dir = Path(record.data[0]["test_file"]).parent.parent if record.data else None
        _, test = eval_examples(cell, data_dir)
        train_chars = sum(mean_chars(train_rows(cell, data_dir)))
    except (KeyError, TypeError, ValueError, DataError):
        return None
    length = lengths(cell, test, records, train_chars)
    flops = m["examples"] * eval_flops(shape(config), length.prompt, length.target + 1)
    return flops / m["eval_s"] / peak


def timed_metrics(step, metrics: dict, results_dir: Path, data_dir: Path | None) -> dict:
    """The record's predicted time on the device it ran on, calibrated from the store's records before it
    (a forecast never costs a record: a prediction that fails says why instead)."""
    device = (metrics.get("devices") or [metrics.get("device")])[0]
    if not device:
        return {}
    try:
        records = Store(results_dir).records()
    except Exception as exc:  # noqa: BLE001 (whatever went wrong, the measurement is kept and says why)
        return {"predicted_time_basis": f"no prediction: {type(exc).__name__}: {exc}"}
    return safe_predict(step.cell, data_dir, records, Target(device)).to_metrics(step.phase)


def safe_predict(
    cell: Cell, data_dir: Path | None, records: list[RunRecord], target: Target
) -> TimePrediction:
    """predict_times, or no prediction and why: a forecast never stops a run or a plan."""
    try:
        return predict_times(cell, data_dir, records, target)
    except Exception as exc:  # noqa: BLE001 (a record the calibration cannot read, say)
        none = PhaseTime(None, None, 0.0, f"no prediction: {type(exc).__name__}: {exc}")
        return TimePrediction(None if cell.is_base else none, none)
