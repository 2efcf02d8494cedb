"""Is one of our numbers like for like with a published one? Aspect by aspect, from the records and
the source's description in published.yaml. Pure (no torch).

A row is "like for like" only when every aspect matches: protocol (decoding, new tokens, eos, the text
scored), scorer, test split (the same file, all of it), test labels, eval bits and the order in which
F1's arguments were passed. Anything the source does not state counts as a difference: a match is
never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from bench.core import protocols
from bench.core.catalog import tasks as known_tasks

TEXTS = {
    "first_line": "first non-empty line",
    "after_answer": "continuation up to a repeated 'Answer: '",
    "after_last_answer": "text after the last 'Answer:'",
}
EOS = {"all": "every eos id", "tokenizer": "tokenizer's eos id only"}


@dataclass(frozen=True)
class Likeness:
    matches: tuple[str, ...]
    differs: tuple[str, ...]

    @property
    def like_for_like(self) -> bool:
        return not self.differs


def published_task(task: str) -> str:
    """The published task a (variant) task is compared with: fiqa_sa_fingpt -> fiqa_sa."""
    spec = known_tasks().get(task)
    return (spec.variant_of if spec else None) or task


def source_test_file(block: dict, task: str) -> str:
    task = published_task(task)
    return (block.get("bench_test_files") or {}).get(task) or _default_test_file(task)


def _default_test_file(task: str) -> str:
    """A task's first test file as the records name it (its data folder / file name)."""
    spec = known_tasks()[task]
    return f"{spec.folder_name}/{spec.data.test[0] if spec.data.test else '(local split)'}"


def source_eval_bits(block: dict, key: str) -> int | None:
    bits = block.get("eval_bits")
    return bits.get(key) if isinstance(bits, dict) else bits


def likeness_to_source(
    block: dict, key: str, task: str, score: dict, eval_bits: int, split: dict
) -> Likeness:
    """`score` is our record's score entry, `split` our test split's info (test_file, test_rows,
    local_split) and the cell's eval limit, `key` the published configuration ("8b_4bit_r4")."""
    matches, differs = [], []

    def aspect(name: str, problems: list[str]) -> None:
        differs.extend(problems) if problems else matches.append(name)

    aspect("protocol", _protocol(block, task, score))
    scorer = block.get("bench_scorer", "finlora")
    aspect(
        "scorer",
        [] if score.get("scorer") == scorer else [f"scorer: ours {score.get('scorer')}, theirs {scorer}"],
    )
    labels, rows = _split(block, task, score, split)
    aspect("split", rows)
    aspect("labels", labels)
    theirs = source_eval_bits(block, key)
    bits = [] if theirs == eval_bits else [f"eval bits: ours {eval_bits}, theirs {theirs or 'not stated'}"]
    aspect("eval bits", bits)
    swapped = published_task(task) in (block.get("bench_f1_swapped") or [])
    aspect(
        "F1 order",
        ["F1: the source passed (prediction, gold) to f1_score, ours (gold, prediction)"] * swapped,
    )
    return Likeness(tuple(matches), tuple(differs))


def _protocol(block: dict, task: str, score: dict) -> list[str]:
    theirs = protocols.get(block.get("bench_protocol", protocols.DEFAULT_PROTOCOL))
    ours = protocols.get(score.get("protocol") or protocols.DEFAULT_PROTOCOL)
    out = []
    if _draws(ours.decoding) != _draws(theirs.decoding):
        mine, source = ours.decoding.describe(score.get("seed")), theirs.decoding.describe("not recorded")
        out.append(f"decoding: ours {mine}, theirs {source}")
    mine, want = score.get("max_new_tokens") or ours.max_new(task), theirs.max_new(published_task(task))
    if mine != want:
        out.append(f"new tokens: ours {mine}, theirs {want}")
    if ours.scored_text != theirs.scored_text:
        out.append(f"scored text: ours {TEXTS[ours.scored_text]}, theirs {TEXTS[theirs.scored_text]}")
    if ours.eos != theirs.eos:
        out.append(f"eos: ours {EOS[ours.eos]}, theirs {EOS[theirs.eos]}")
    return out


def _draws(decoding: protocols.Decoding) -> tuple:
    return decoding.sample, decoding.temperature, decoding.top_p


def _split(block: dict, task: str, score: dict, split: dict) -> tuple[list[str], list[str]]:
    """(label differences, split differences)."""
    mine = score.get("test_file") or _short(split.get("test_file")) or _default_test_file(task)
    theirs = source_test_file(block, task)
    labels, rows = [], []
    if split.get("local_split") or score.get("local_split"):
        rows.append("split: ours a local split of the data, theirs " + theirs)
    elif mine != theirs:
        note = (block.get("bench_label_notes") or {}).get(published_task(task))
        if note:
            labels.append(f"labels: {note}")
        else:
            rows.append(f"split: ours {mine}, theirs {theirs}")
    total, n, limit = split.get("test_rows"), score.get("n"), split.get("limit")
    if n and total and n < total:
        rows.append(f"rows: ours the first {n} of {total}")
    elif n and not total and limit and n <= limit:  # records without the split's size: the limit tells
        rows.append(f"rows: ours the first {n} (eval limit {limit})")
    return labels, rows


def _short(path: str | None) -> str | None:
    return f"{PurePath(path).parent.name}/{PurePath(path).name}" if path else None
