"""Training mixes: the paper's sentiment mix, its parts, repeat factors, size and order."""

from __future__ import annotations

from collections import Counter

import numpy as np

from bench.core.catalog import training_set
from bench.core.data import load_splits
from bench.core.mixes import MIXES, mix_note, mix_order

PAPER_ROWS = 76_772  # FinGPT fingpt-sentiment-train
PAPER_NWGI_TRAIN = 16_184


def test_sentiment_fingpt_is_the_papers_mix_with_nwgi_from_its_local_split(data_dir):
    mix = MIXES["sentiment_fingpt"]
    assert [(p.task, p.repeat) for p in mix.parts] == [
        ("fpb", 6),
        ("fiqa_sa_fingpt", 21),
        ("tfns", 2),
        ("nwgi", 1),
    ]
    assert training_set("sentiment_fingpt").train_tasks == tuple(p.task for p in mix.parts)
    infos = [load_splits(p.task, data_dir).info.to_dict() for p in mix.parts]
    rows = {i["task"]: i["train_rows"] for i in infos}
    assert rows["fpb"] == 3634 and rows["fiqa_sa_fingpt"] == 938 and rows["tfns"] == 9543
    nwgi = rows["nwgi"]  # 70% of the NWGI test file by input hash: FinGPT's NWGI train is not available
    sizes = mix.sizes(rows)
    assert sizes == {"fpb": 21_804, "fiqa_sa_fingpt": 19_698, "tfns": 19_086, "nwgi": nwgi}
    total = sum(sizes.values())
    assert total == PAPER_ROWS - (PAPER_NWGI_TRAIN - nwgi)  # the paper's size minus NWGI's difference
    note = mix_note(mix, infos)
    assert f"= {total:,} rows, shuffled with seed 42" in note
    assert "nwgi x1" in note and "a local split of the test file" in note
    assert f"the source's mix has 76,772 ({total - PAPER_ROWS:+,})" in note


def test_mix_order_repeats_each_row_and_permutes_as_datasets_shuffle_does():
    from datasets import Dataset

    mix = MIXES["sentiment_fingpt"]
    rows = {"fpb": 5, "fiqa_sa_fingpt": 3, "tfns": 4, "nwgi": 2}
    order = mix_order(mix, rows)
    assert len(order) == 6 * 5 + 21 * 3 + 2 * 4 + 2
    counts = Counter(order)
    assert counts[("fpb", 0)] == 6 and counts[("fiqa_sa_fingpt", 2)] == 21 and counts[("nwgi", 1)] == 1
    shuffled = Dataset.from_dict({"i": list(range(len(order)))}).shuffle(seed=42)["i"]
    assert list(np.random.default_rng(42).permutation(len(order))) == list(shuffled)
    assert mix_order(mix, rows) == order  # seeded: the same order every time
