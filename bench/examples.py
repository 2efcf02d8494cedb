"""Training examples from the same lm-eval task definitions that evaluation uses (tasks/), so
training prompts and evaluation prompts cannot drift apart; then tokenized, length-grouped batches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import torch

TASKS_DIR = Path(__file__).resolve().parent.parent / "tasks"
IGNORE = -100


def task_manager(data_dir: Path):
    from lm_eval.tasks import TaskManager

    # include_defaults=False skips ~17 s of indexing lm-eval's stock tasks.
    return TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)}
    )


def training_pairs(
    tasks: tuple[str, ...], data_dir: Path, limit: int | None, seed: int
) -> list[tuple[str, str]]:
    """(prompt, target) pairs from every training task, mixed and shuffled with the cell's seed."""
    from lm_eval.tasks import get_task_dict

    task_dict = get_task_dict(list(tasks), task_manager(data_dir))
    pairs = []
    for name in tasks:
        task = task_dict[name]
        pairs += [(task.doc_to_text(doc), str(task.doc_to_target(doc))) for doc in task.training_docs()]
    random.Random(seed).shuffle(pairs)
    return pairs[:limit] if limit else pairs


@dataclass(frozen=True)
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool


def encode(tokenizer, prompt: str, target: str, max_len: int) -> Encoded:
    """Loss on the target tokens (and EOS) only; a too-long prompt loses its start, not its question.

    The prompt gets the tokenizer's default special tokens (Llama 3 adds BOS), exactly as
    lm-eval's HFLM encodes it at evaluation time.
    """
    prompt_ids = tokenizer(prompt).input_ids
    target_ids = tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    keep = 1 if prompt_ids[:1] == [tokenizer.bos_token_id] else 0
    room = max(0, max_len - len(target_ids) - keep)
    truncated = len(prompt_ids) - keep > room
    if truncated:
        prompt_ids = prompt_ids[:keep] + (prompt_ids[-room:] if room else [])
        target_ids = target_ids[: max_len - len(prompt_ids)]
    return Encoded(prompt_ids + target_ids, [IGNORE] * len(prompt_ids) + target_ids, truncated)


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, world: int) -> list[list[int]]:
    """Shuffled batches of similar lengths (little padding); a multiple of `world` so ranks stay in step.

    Sorting happens inside windows of 50 batches, so batch order stays random across an epoch.
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    usable = len(batches) - len(batches) % world
    return batches[:usable]


def collate(examples: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest example of this batch, not to a fixed length."""
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}
