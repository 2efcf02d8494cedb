"""Predicted GPU memory per cell, before it runs: for `bench plan`, the runner's fit check and records.

Pure (no torch). The architecture comes from config.json (shipped configs, local directories, the tiny
model's known sizes); hub ids without a local config have no prediction. Sequence length: batches are
padded to their longest row and length-grouped, so the peak comes from the longest training rows,
estimated at ~4 characters per token and capped at max_seq_len.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from bench.core.architecture import LINEAR_MODULES, config_problem, shape
from bench.core.catalog import training_set
from bench.core.cell import Cell, ModelSpec
from bench.core.data import DataError, load_splits
from bench.core.records import Phase
from bench.models.sources import kind_of
from bench.planning.memory import GIB, predict_eval, predict_training

CHARS_PER_TOKEN = 4.0

EVAL_NEW_TOKENS = 30  # the larger of the task families' max_gen_toks


@dataclass(frozen=True)
class Prediction:
    train_gb: float | None  # torch peak allocated per GPU during training (None for base rows)
    eval_gb: float  # per GPU, layers split over the cell's GPUs
    seq_len: int
    basis: str

    def to_metrics(self, phase: str) -> dict:
        value = self.train_gb if phase == Phase.TRAIN else self.eval_gb
        return {"predicted_gpu_gb": value, "predicted_basis": self.basis}


def architecture(spec: ModelSpec) -> dict | None:
    """config.json values of the cell's model, from its source kind; None where none is at hand."""
    return kind_of(spec).architecture(spec)


def longest_tokens(cell: Cell, data_dir: Path | None) -> int:
    cap = cell.train.max_seq_len if cell.train else 512
    if data_dir is None:
        return cap
    try:
        tasks = training_set(cell.task).train_tasks
        rows = [r for t in tasks for r in load_splits(t, data_dir).train]
    except DataError:
        return cap
    longest = max((len(r["context"]) + len(r["target"]) for r in rows), default=cap * CHARS_PER_TOKEN)
    return max(1, min(cap, round(longest / CHARS_PER_TOKEN)))


class PlanError(Exception):
    """A cell the planner cannot size: bad input (the message names the cell, the key and the fix)."""


@lru_cache(maxsize=1024)  # plan, the fit check and every record of a run ask for the same cells
def predict(cell: Cell, data_dir: Path | None = None) -> Prediction | None:
    """What a GPU run of the cell will allocate, per GPU (the CPU has no such limit). Raises PlanError
    for a cell it cannot size (unknown target modules, a config.json without the shapes it needs)."""
    try:
        config = architecture(cell.model)
    except (OSError, ValueError) as exc:
        problem = f"its config.json cannot be read ({exc})"
        raise PlanError(f"cell {cell.id}: model {cell.model.name!r}: {problem}") from exc
    if config is None:
        return None
    problem = config_problem(config)
    if problem:
        raise PlanError(f"cell {cell.id}: model {cell.model.name!r}: its config.json {problem}")
    unknown = [m for m in (cell.train.target_modules if cell.train else ()) if m not in LINEAR_MODULES]
    if unknown:
        raise PlanError(f"cell {cell.id}: key 'train.target_modules': unknown module(s) {unknown}; "
                        f"use some of {', '.join(LINEAR_MODULES)}")  # fmt: skip
    _check_rank(cell, config)
    return _predict(cell, config, data_dir)


def _check_rank(cell: Cell, config: dict) -> None:
    """A LoRA rank above a target layer's smaller side is no low-rank update (peft would build it and
    the plan would predict terabytes for rank 1e9): refused before anything loads."""
    if cell.is_base:
        return
    dims = shape(config).linears()
    limit = min(min(dims[m]) for m in cell.train.target_modules)
    if cell.rank > limit:
        raise PlanError(f"cell {cell.id}: key 'rank': {cell.rank} is larger than the smallest side ({limit}) "
                        f"of the layers it adapts ({', '.join(cell.train.target_modules)}); use a rank "
                        f"well below {limit}, e.g. 4-64")  # fmt: skip


def _predict(cell: Cell, config: dict, data_dir: Path | None) -> Prediction:
    seq = longest_tokens(cell, data_dir)
    # Evaluation runs on one node: layers split over that node's GPUs, not the whole training's.
    evaluation = predict_eval(
        config, cell.eval_bits, cell.eval.batch_size, seq, EVAL_NEW_TOKENS, cell.gpus_per_node
    )
    train_gb = None
    if not cell.is_base:
        cfg = cell.train
        training = predict_training(
            config, cell.bits, cell.rank, cfg.target_modules, cfg.batch_per_gpu, seq,
            cfg.gradient_checkpointing, cfg.optimizer, cfg.zero_stage, cell.gpus,
            # prepare_model_for_kbit_training leaves norms, embeddings and lm_head in fp32 (4-bit, 8-bit)
            compute_bytes=4 if cell.bits in (4, 8) or cfg.precision == "fp32" else 2,
        )  # fmt: skip
        train_gb = round(training.allocated_per_gpu / GIB, 2)
    basis = (
        f"bench.planning.memory, seq_len~{seq} (longest training rows at ~{CHARS_PER_TOKEN:.0f} chars/token)"
    )
    return Prediction(train_gb, round(evaluation.allocated_per_gpu / GIB, 2), seq, basis)


def does_not_fit(prediction: Prediction | None, phase: str, gpu_gb: list[float]) -> str | None:
    """Why the phase cannot fit the visible GPUs, or None (no GPUs: nothing to check)."""
    if prediction is None or not gpu_gb:
        return None
    need = prediction.train_gb if phase == Phase.TRAIN else prediction.eval_gb
    if need is None or need <= min(gpu_gb):
        return None
    return f"predicted {need:.1f} GiB per GPU, the smallest visible GPU has {min(gpu_gb):.1f} GiB"
