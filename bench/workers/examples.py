"""Training examples from the same lm-eval task definitions that evaluation uses (tasks/), so
training prompts and evaluation prompts cannot drift apart; then tokenized, length-grouped batches
and the loss on their target tokens.
"""

from __future__ import annotations

import inspect
import random
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.core.catalog import TASKS_DIR, training_set
from bench.core.mixes import MIXES, mix_order
from bench.workers.chat import ChatTemplate, adds_special_tokens, prompt_of
from bench.workers.truncation import PromptTooLong, fit_prompt, refuse_unfit

IGNORE = -100


def task_manager(data_dir: Path):
    """lm-eval's task index over bench's tasks and the user tasks this process registered
    (bench.core.task_content.register_cell_tasks), whose YAMLs live in bench's cache."""
    from lm_eval.tasks import TaskManager

    from bench.core.task_yaml import user_yaml_dir
    from bench.core.tasks import REGISTRY

    user = user_yaml_dir([s for s in REGISTRY.all().values() if not s.builtin])
    paths = [str(TASKS_DIR)] + ([str(user)] if user else [])
    # include_defaults=False skips ~17 s of indexing lm-eval's stock tasks.
    return TaskManager(include_path=paths, include_defaults=False, metadata={"data_dir": str(data_dir)})


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
    task: str = ""  # the task it came from: length grouping keeps a task's rows together


def encode(tokenizer, prompt: str, target: str, max_len: int) -> Encoded:
    """Loss on the target tokens (and EOS) only; a too-long prompt loses the middle of its input text,
    never its instruction or its "Answer:" tail (bench.workers.truncation), or is refused.

    The prompt gets the tokenizer's default special tokens (Llama 3 adds BOS) unless it starts with
    the BOS text already (a chat template's), exactly as lm-eval's HFLM encodes it at evaluation time.
    """
    target_ids = tokenizer(target, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    special = adds_special_tokens(tokenizer, prompt)
    fitted = fit_prompt(tokenizer, prompt, max_len - len(target_ids), add_special_tokens=special)
    return Encoded(fitted.ids + target_ids, [IGNORE] * len(fitted.ids) + target_ids, fitted.truncated)


@dataclass(frozen=True)
class TrainingRow:
    task: str
    row: int  # its number (from 1) in the task's train split, to name it in errors
    prompt: str
    target: str


def training_rows(
    set_name: str, data_dir: Path, limit: int | None, seed: int, chat: ChatTemplate | None = None
) -> list[TrainingRow]:
    """A training set's rows in training order: a mix (bench.core.mixes) repeats its parts and orders
    them with its own seeded permutation; any other set is its tasks' rows shuffled with the cell's
    seed (the order training_pairs gives). With `chat`, each prompt is rendered through it
    (prompt_format: chat), as evaluation renders it."""
    from lm_eval.tasks import get_task_dict

    tasks = training_set(set_name).train_tasks
    task_dict = get_task_dict(list(tasks), task_manager(data_dir))
    per_task = {}
    for name in tasks:
        task = task_dict[name]
        pairs = ((prompt_of(task, d, chat), str(task.doc_to_target(d))) for d in task.training_docs())
        per_task[name] = [TrainingRow(name, i, *pair) for i, pair in enumerate(pairs, start=1)]
    if set_name in MIXES:
        order = mix_order(MIXES[set_name], {name: len(rows) for name, rows in per_task.items()})
        rows = [per_task[name][i] for name, i in order]
    else:
        rows = [row for name in tasks for row in per_task[name]]
        random.Random(seed).shuffle(rows)
    return rows[:limit] if limit else rows


def encode_rows(tokenizer, rows: list[TrainingRow], max_len: int) -> list[Encoded]:
    """Every row encoded; rows that cannot fit are collected and refused together, by name."""
    encoded, problems = [], []
    for r in rows:
        try:
            encoded.append(replace(encode(tokenizer, r.prompt, r.target, max_len), task=r.task))
        except PromptTooLong as exc:
            problems.append((r.task, r.row, str(exc)))
    refuse_unfit(problems, max_len)
    return encoded


def length_grouped_batches(
    lengths: list[int], batch_size: int, seed: int, world: int, groups: list[str] | None = None
) -> list[list[int]]:
    """Shuffled batches of similar lengths (little padding); a multiple of `world` so ranks stay in step.

    Sorting happens inside windows of 50 batches, so batch order stays random across an epoch. With
    `groups` (each row's task), a window sorts by task first, then length: rows of one task, which
    begin with the same instruction, meet in a batch and share it (bench.workers.prefix). One group
    (a single task) gives exactly the batches of a sort by length alone (the sort is stable).
    """
    order = list(range(len(lengths)))
    rng = random.Random(seed)
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        key = (lambda i: (groups[i], lengths[i])) if groups else (lambda i: lengths[i])
        chunk = sorted(order[start : start + window], key=key)
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    usable = len(batches) - len(batches) % world
    return batches[:usable]


def random_batches(
    lengths: list[int], batch_size: int, seed: int, world: int, groups: list[str] | None = None
) -> list[list[int]]:
    """Shuffled batches without regard to length or task (`train.batching: random`, the ablation's
    control; `groups` is ignored); a multiple of `world`, the last short batch dropped, as
    length_grouped_batches keeps."""
    order = list(range(len(lengths)))
    random.Random(seed).shuffle(order)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    usable = len(batches) - len(batches) % world
    return batches[:usable]


BATCHERS = {"length_grouped": length_grouped_batches, "random": random_batches}


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


@dataclass(frozen=True)
class Batch:
    """One micro-batch on its device, with what the loss needs and what the throughput counts."""

    inputs: dict[str, torch.Tensor]  # input_ids, attention_mask, labels (right-padded)
    positions: torch.Tensor  # (rows, k): the positions whose next token carries loss
    targets: torch.Tensor  # (rows, k): that next token, IGNORE where a row has fewer than k
    tokens: int  # real (non-pad) tokens, counted on the host: no device sync
    rows: int
    shared: int = 0  # leading tokens every row has, computed once (bench.workers.prefix); 0: none
    lengths: tuple[int, ...] = ()  # each row's real tokens, on the host (packing needs no device sync)


def make_batch(examples: list[Encoded], pad_id: int, device: torch.device, shared: int = 0) -> Batch:
    inputs = collate(examples, pad_id)
    positions, targets = loss_targets(examples)
    lengths = tuple(len(e.input_ids) for e in examples)
    pin = device.type == "cuda"

    def move(t: torch.Tensor) -> torch.Tensor:
        # Pinned host memory lets the copy run asynchronously: the host goes on to the next batch.
        return (t.pin_memory() if pin else t).to(device, non_blocking=pin)

    return Batch(
        inputs={k: move(v) for k, v in inputs.items()},
        positions=move(positions),
        targets=move(targets),
        tokens=sum(lengths),
        rows=len(examples),
        shared=shared,
        lengths=lengths,
    )


def loss_targets(examples: list[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the positions p with labels[p + 1] != IGNORE and those labels: the shifted causal-LM
    targets. A fixed k per batch (filler: position 0, target IGNORE) keeps shapes known on the host."""
    rows = [[p for p in range(len(e.labels) - 1) if e.labels[p + 1] != IGNORE] for e in examples]
    k = max(1, max(len(r) for r in rows))
    positions = torch.zeros((len(examples), k), dtype=torch.long)
    targets = torch.full((len(examples), k), IGNORE, dtype=torch.long)
    for i, (e, r) in enumerate(zip(examples, rows, strict=True)):
        positions[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        targets[i, : len(r)] = torch.tensor([e.labels[p + 1] for p in r], dtype=torch.long)
    return positions, targets


def keeps_logits(model) -> bool:
    """Whether the causal LM under peft takes per-row `logits_to_keep` positions.

    A 2D (rows, k) position tensor needs transformers' `slice_logits_to_keep`; older releases (5.17 on
    the GPU image) index hidden_states[:, positions] instead, which gives rows x rows x k logits
    (seen there as "Expected input batch_size (16) to match target batch_size (12)").
    """
    from transformers import modeling_utils

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    takes = "logits_to_keep" in inspect.signature(base.forward).parameters
    return takes and hasattr(modeling_utils, "slice_logits_to_keep")


def target_loss(model, batch: Batch, sliced: bool) -> torch.Tensor:
    """Mean cross-entropy over the target tokens: the loss `model(..., labels=labels).loss` computes.

    Sliced, the vocabulary projection and the softmax run only at the loss positions (FPB: the label
    and EOS, 2 of ~80 per row) instead of at every position; the logits elsewhere have no loss and no
    gradient. Same tokens, same mean; on the tiny model a step takes 21 instead of 37 ms (1 thread).
    """
    if not sliced:
        return model(**batch.inputs).loss
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=batch.positions).logits
    # As transformers' ForCausalLMLoss: upcast, flatten, mean over the tokens that are not IGNORE.
    return F.cross_entropy(logits.float().flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE)
