"""Training mixes: a training set made of task train splits, each repeated a whole number of times, in
one seeded order. Pure (numpy, no torch).

`sentiment_fingpt` is the mix the quantized paper trained its one sentiment adapter on: FinGPT's
fingpt-sentiment-train, 76,772 rows = FPB train x6 (3,634) + FiQA SA FinGPT split x21 (938) + TFNS
train x2 (9,543) + NWGI train x1 (16,184), shuffled with seed 42. NWGI's train split is not in the data
folder, so its part here is bench's local split of the NWGI test file (70% by input hash): the mix is
smaller by 16,184 minus that part, and the record says so. The order: the parts concatenated as
listed, then `numpy.random.default_rng(seed).permutation`, which is what datasets' `shuffle(seed=42)`
draws; with a different NWGI part the permutation cannot give FinGPT's row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MixPart:
    task: str  # a catalog task (or variant) whose train split is repeated
    repeat: int


@dataclass(frozen=True)
class Mix:
    name: str
    parts: tuple[MixPart, ...]
    seed: int
    source: str
    published_rows: int | None = None  # the size of the source's mix, to state any difference

    def sizes(self, rows: dict[str, int]) -> dict[str, int]:
        """Rows each part contributes, from the parts' train split sizes."""
        return {p.task: p.repeat * rows[p.task] for p in self.parts}

    def describe(self, rows: dict[str, int], notes: dict[str, str] | None = None) -> str:
        notes = notes or {}
        parts = " + ".join(
            f"{p.task} x{p.repeat} ({rows[p.task]:,}{'; ' + notes[p.task] if p.task in notes else ''})"
            for p in self.parts
        )
        total = sum(self.sizes(rows).values())
        out = f"training mix {self.name}: {parts} = {total:,} rows, shuffled with seed {self.seed}"
        if self.published_rows and total != self.published_rows:
            out += f"; the source's mix has {self.published_rows:,} ({total - self.published_rows:+,})"
        return out


def mix_order(mix: Mix, rows: dict[str, int]) -> list[tuple[str, int]]:
    """(task, row index) in training order: parts concatenated with their repeats, then permuted."""
    missing = [p.task for p in mix.parts if not rows.get(p.task)]
    if missing:
        raise ValueError(f"mix {mix.name!r}: no training rows for {', '.join(missing)}")
    flat = [(p.task, i) for p in mix.parts for _ in range(p.repeat) for i in range(rows[p.task])]
    return [flat[i] for i in np.random.default_rng(mix.seed).permutation(len(flat))]


MIXES: dict[str, Mix] = {
    "sentiment_fingpt": Mix(
        name="sentiment_fingpt",
        parts=(MixPart("fpb", 6), MixPart("fiqa_sa_fingpt", 21), MixPart("tfns", 2), MixPart("nwgi", 1)),
        seed=42,
        source="FinGPT fingpt-sentiment-train, the sentiment training set of arXiv 2412.11378",
        published_rows=76_772,
    ),
    # FinLoRA 2025's sentiment adapters (shared/reference/FINLORA-PROTOCOLS.md, inferred from the
    # adapter cards' step counts: 4 GPUs, global batch 64, 1116 steps an epoch): the same repeats on the
    # flare FiQA split (750 rows); data/process_sentiment_train.py:122-124 at HEAD has the repeat lines
    # commented out, so the adapters predate that edit. TFNS on the dataset card's labels (theirs swapped).
    "sentiment_2025_mix": Mix(
        name="sentiment_2025_mix",
        parts=(MixPart("fpb", 6), MixPart("fiqa_sa", 21), MixPart("tfns", 2), MixPart("nwgi", 1)),
        seed=42,
        source="FinLoRA 2025's repeated sentiment mix (FPB x6 + FiQA x21 + TFNS x2 + NWGI x1)",
        published_rows=72_824,
    ),
}


def mix_note(mix: Mix, data: list[dict]) -> str:
    """The record's line on a mix, from its training splits' info (bench.core.data.SplitInfo dicts)."""
    rows = {d["task"]: d["train_rows"] for d in data}
    local = {d["task"]: "a local split of the test file" for d in data if d.get("local_split")}
    return mix.describe(rows, local)
