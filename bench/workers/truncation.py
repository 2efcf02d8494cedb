"""Training prompts that fit max_seq_len without losing their instruction or their "Answer:" tail.

FinLoRA never truncated; bench has a max_seq_len, and cutting a prompt's start (as bench once did)
cuts the instruction of long NER rows ("What is the entity type of 'X'..."), which names what the answer
is about. So a prompt that is too long loses tokens from the middle of its input text only: everything
up to and including the first "\\nInput:" and everything from the last "\\nAnswer:" on stay, token for
token as the whole prompt tokenizes. A prompt that cannot fit that way, or has no such structure, is
refused: the cell fails before training and names the rows (task, row number in its train file).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

INPUT, ANSWER = "\nInput:", "\nAnswer:"


class PromptTooLong(ValueError):
    pass


@dataclass(frozen=True)
class Fitted:
    ids: list[int]
    truncated: bool


def cuttable_span(prompt: str) -> tuple[int, int] | None:
    """(start, end) character span of the input text, the only part that may lose tokens."""
    start, end = prompt.find(INPUT), prompt.rfind(ANSWER)
    if start < 0 or end < 0 or end <= start:
        return None
    return start + len(INPUT), end


def fit_prompt(tokenizer, prompt: str, room: int, add_special_tokens: bool = True) -> Fitted:
    """The prompt's token ids (with the tokenizer's special tokens unless told not), at most `room`."""
    encoded = tokenizer(prompt, return_offsets_mapping=True, add_special_tokens=add_special_tokens)
    ids = list(encoded["input_ids"])
    if len(ids) <= room:
        return Fitted(ids, False)
    span = cuttable_span(prompt)
    if span is None:
        raise PromptTooLong(f"{len(ids)} tokens > {room}, and no '\\nInput: ... \\nAnswer:' to cut inside")
    start, end = span
    inside = [i for i, (a, b) in enumerate(encoded["offset_mapping"]) if b > a and a >= start and b <= end]
    excess = len(ids) - room
    if len(inside) < excess:
        kept = len(ids) - len(inside)
        raise PromptTooLong(f"its instruction and answer tail alone take {kept} tokens > {room}")
    first = inside[0] + (len(inside) - excess) // 2  # keep the input's start and its end
    return Fitted(ids[:first] + ids[first + excess :], True)


def refuse_unfit(problems: list[tuple[str, int, str]], max_seq_len: int) -> None:
    """One error naming every row that cannot fit, so the cell fails before any training step."""
    if not problems:
        return
    shown = "; ".join(f"{task} row {row}: {why}" for task, row, why in problems[:10])
    more = f" (and {len(problems) - 10} more)" if len(problems) > 10 else ""
    raise PromptTooLong(
        f"{len(problems)} training rows cannot fit train.max_seq_len={max_seq_len} without cutting their "
        f"instruction or answer tail: {shown}{more}. Raise train.max_seq_len or limit the training rows."
    )


def truncated_by_task(tasks: list[str], truncated: list[bool]) -> dict[str, int]:
    """Rows whose input text lost tokens, per training task (every task listed, 0 included)."""
    counts = Counter(task for task, cut in zip(tasks, truncated, strict=True) if cut)
    return {task: counts.get(task, 0) for task in dict.fromkeys(tasks)}
