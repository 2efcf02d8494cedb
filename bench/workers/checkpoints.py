"""Training checkpoints in a cell's folder: DeepSpeed's own save_checkpoint / load_checkpoint (LoRA weights,
optimizer and scheduler state, ZeRO shards) plus bench's loop state in its client_state: every rank's RNG
states and counters, the data order's epoch and position, the loss curve and step times so far.

Layout: <cell dir>/checkpoints/step-000012/ holds DeepSpeed's tag folder and bench-checkpoint.json (the
cell key, the step, the world size, and each file's size and sha256). A checkpoint is written under a
.tmp- name, fsynced, its manifest written last, then renamed into place: a kill during the write leaves
the previous one whole. A checkpoint whose manifest is missing, names another cell key or world size, or
whose files do not match their sizes and hashes is ignored with a warning (and removed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import shutil
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist

from bench.workers import faults

CHECKPOINTS = "checkpoints"
MANIFEST = "bench-checkpoint.json"
TAG = "state"  # DeepSpeed's tag: the folder inside a checkpoint that holds its files
FORMAT = 1


# bench's default spacing, besides a tenth of the run: at least FIRST_AFTER_S seconds of training before a
# checkpoint (a run killed sooner loses less than that) and SPACING times the previous checkpoint's own write
# time between two, so that checkpoints cost about 1% of the training at most, whatever the model, disk and
# step time. A tenth of the run alone cost 3.3-4.3% of train_s on the tiny model's 8-step runs (7 checkpoints
# of about 0.03 s; benchmarks/checkpoint_overhead.py, benchmarks/results/checkpoints.jsonl).
FIRST_AFTER_S = 60.0
SPACING = 100


def interval(cfg, total_steps: int) -> int:
    """Optimizer steps between checkpoints (0 = none): the cell's setting, by default a tenth of the run
    (then also spaced by SPACING: Checkpointer.due)."""
    if cfg.checkpoint_every is not None:
        return cfg.checkpoint_every
    return max(1, math.ceil(total_steps / 10))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(
    engine, cell_dir: Path, cell_key: str, step: int, shared: dict, own: dict, keep: int, cell_id: str = ""
) -> float:
    """Every rank calls it at the same step boundary; returns the seconds it took. `shared`: the loop
    state as rank 0 holds it; `own`: this rank's counters (its RNG states are added here)."""
    started = time.perf_counter()
    rank = dist.get_rank()
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, {**own, "rng": rng_state()})
    root = Path(cell_dir) / CHECKPOINTS
    tmp = root / f".tmp-step-{step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    client = {"bench": {**shared, "ranks": ranks}}
    with _trainable_only(engine):
        engine.save_checkpoint(str(tmp), tag=TAG, client_state=client, save_latest=False,
                               exclude_frozen_parameters=True)  # fmt: skip
    dist.barrier()
    faults.at("train", cell_id, f"checkpoint{step}")  # reliability tests: a kill in the middle of a write
    if rank == 0:
        files = {str(p.relative_to(tmp)): [p.stat().st_size, _sha256(p)] for p in _files(tmp)}
        manifest = {
            "format": FORMAT,
            "cell_key": cell_key,
            "step": step,
            "world_size": len(ranks),
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        for path in [*_files(tmp), *(p for p in tmp.rglob("*") if p.is_dir()), tmp]:
            _fsync(path)  # the files and their folders on disk before the rename makes them the checkpoint
        final = root / f"step-{step:06d}"
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync(root)
        for old in _checkpoints(root)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
    return time.perf_counter() - started


@contextmanager
def _trainable_only(engine):
    """The module state DeepSpeed saves, cut to the trainable weights. exclude_frozen_parameters drops frozen
    parameters only, not buffers and bitsandbytes' quantization state (per-block absmax, quant maps):
    measured 116 MB kept for SmolLM2-135M in 4 bits beside 1.3 MB of LoRA weights; the base is rebuilt from
    its source on resume anyway. An instance attribute over the engine's method, removed afterwards."""
    trainable = {name for name, p in engine.module.named_parameters() if p.requires_grad}
    full = engine.module_state_dict
    engine.module_state_dict = lambda *a, **k: {n: v for n, v in full(*a, **k).items() if n in trainable}
    try:
        yield
    finally:
        del engine.module_state_dict


def load(engine, cell_dir: Path, cell_key: str) -> dict | None:
    """Restore the newest valid checkpoint of this cell into the engine and this rank's RNG; return bench's
    state (with this rank's counters as "own"), or None to train from step 0. Every rank calls it."""
    chosen = [latest_valid(Path(cell_dir) / CHECKPOINTS, cell_key, dist.get_world_size())
              if dist.get_rank() == 0 else None]  # fmt: skip
    dist.broadcast_object_list(chosen, src=0)
    if chosen[0] is None:
        return None
    _, client = engine.load_checkpoint(chosen[0], tag=TAG, load_module_strict=False)
    state = dict(client["bench"])
    own = state.pop("ranks")[dist.get_rank()]
    set_rng_state(own.pop("rng"))
    return {**state, "own": own}


def latest_valid(root: Path, cell_key: str, world: int) -> str | None:
    """The newest checkpoint that is whole and this cell's; the others are warned about and removed."""
    for leftover in root.glob(".tmp-*"):  # a write that a kill cut short
        shutil.rmtree(leftover, ignore_errors=True)
    for path in reversed(_checkpoints(root)):
        problem = _problem(path, cell_key, world)
        if problem is None:
            return str(path)
        print(f"warning: checkpoint {path} ignored and removed: {problem}", flush=True)
        shutil.rmtree(path, ignore_errors=True)
    return None


def remove_all(cell_dir: Path) -> None:
    shutil.rmtree(Path(cell_dir) / CHECKPOINTS, ignore_errors=True)


def _problem(path: Path, cell_key: str, world: int) -> str | None:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        return f"no readable {MANIFEST} ({type(exc).__name__})"
    if manifest.get("format") != FORMAT:
        return f"format {manifest.get('format')!r}, this bench reads {FORMAT}"
    if manifest.get("cell_key") != cell_key:
        return f"it is cell {manifest.get('cell_key')!r}'s, this cell is {cell_key!r}"
    if manifest.get("world_size") != world:
        return f"written by {manifest.get('world_size')} ranks, this training has {world}"
    for name, (size, digest) in manifest.get("files", {}).items():
        file = path / name
        if not file.is_file() or file.stat().st_size != size or _sha256(file) != digest:
            return f"{name} is missing or differs from its recorded size and hash (a cut or damaged write)"
    return None


def _checkpoints(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("step-*") if p.is_dir())


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Checkpointer:
    """When the loop writes checkpoints and what they cost (seconds, count) in this attempt. `spaced`
    (bench's default interval): a due checkpoint is skipped until FIRST_AFTER_S seconds of this attempt's
    training have passed, and then SPACING times the previous one's write time since it; rank 0's clock
    decides for every rank."""

    def __init__(self, cell_dir: Path, cell_key: str, every: int, keep: int, cell_id: str = "",
                 spaced: bool = False):  # fmt: skip
        self.cell_dir, self.cell_key, self.cell_id = cell_dir, cell_key, cell_id
        self.every, self.keep, self.spaced = every, keep, spaced
        self.written, self.seconds = 0, 0.0
        self.last_s, self.last_end = 0.0, time.monotonic()

    def due(self, step: int, total_steps: int) -> bool:
        if not (self.every > 0 and step % self.every == 0 and step < total_steps):  # the last: the adapter
            return False
        if not self.spaced:
            return True
        # One small collective per tenth of the run: the ranks' clocks could disagree at the threshold.
        wait = SPACING * self.last_s if self.written else FIRST_AFTER_S
        ready = [time.monotonic() - self.last_end >= wait]
        if dist.is_initialized() and dist.get_world_size() > 1:
            dist.broadcast_object_list(ready, src=0)
        return bool(ready[0])

    def write(self, engine, step: int, shared: dict, own: dict) -> None:
        self.last_s = save(engine, self.cell_dir, self.cell_key, step, shared, own, self.keep, self.cell_id)
        self.seconds += self.last_s
        self.written += 1
        self.last_end = time.monotonic()
