"""Comparison rows that must, and must not, be "like for like" with the published numbers."""

from __future__ import annotations

import pytest

from bench.core.cell import Cell, EvalConfig, ModelSpec, TrainConfig
from bench.core.records import RunRecord
from bench.report.build import build_report
from bench.report.likeness import likeness_to_source
from bench.report.published import SCORE_BLOCKS, load_published

PUBLISHED = load_published()
Y2025, Y2024 = (PUBLISHED[name] for name in SCORE_BLOCKS)
FULL = {
    "fpb": ("fpb/test.jsonl", 1212),
    "fiqa_sa": ("fiqa_sa/test.jsonl", 235),
    "fiqa_sa_fingpt": ("fiqa_sa/test_fingpt_variant.jsonl", 275),
    "tfns": ("tfns/test.jsonl", 2388),
    "tfns_as_published": ("tfns/test_finlora_as_published.jsonl", 2388),
    "nwgi": ("nwgi/test.jsonl", 4047),
}


def ours(task: str, protocol: str, scorer: str, n: int | None = None, **extra) -> tuple[dict, dict]:
    """A score entry as the evaluation worker writes it, and its split info."""
    from bench.core.protocols import get

    p = get(protocol)
    test_file, rows = FULL[task]
    score = {"task": task, "scorer": scorer, "n": n or rows, "protocol": protocol, "test_file": test_file,
             "max_new_tokens": p.max_new(task), "seed": 1234 if p.decoding.sample else None,
             **extra}  # fmt: skip
    return score, {"task": task, "test_file": f"/data/{test_file}", "test_rows": rows, "local_split": False}


def test_2024_protocol_at_16_bits_on_the_sources_split_is_like_for_like():
    for task in ("fpb", "fiqa_sa_fingpt", "tfns"):
        score, split = ours(task, "finlora-2024", "finlora")
        found = likeness_to_source(Y2024, "8b_8bit_r8", task, score, 16, split)
        assert found.like_for_like, found.differs
        assert found.matches == ("protocol", "scorer", "split", "labels", "eval bits", "F1 order")


def test_2025_protocol_and_scorer_at_the_adapters_bits_is_like_for_like():
    score, split = ours("fpb", "finlora-2025", "finlora2025")
    assert likeness_to_source(Y2025, "8b_4bit_r4", "fpb", score, 4, split).like_for_like
    assert likeness_to_source(Y2025, "8b_8bit_r8", "fpb", score, 8, split).like_for_like
    # TFNS: only against their own (label-swapped) file
    score, split = ours("tfns_as_published", "finlora-2025", "finlora2025")
    assert likeness_to_source(Y2025, "8b_8bit_r8", "tfns_as_published", score, 8, split).like_for_like


@pytest.mark.parametrize(
    "block, key, task, protocol, scorer, bits, n, expected",
    [
        (Y2025, "8b_8bit_r8", "tfns", "finlora-2025", "finlora2025", 8, None,
         ["labels: swapped in the source's test file (1,566 neutral tweets labelled positive"]),
        (Y2024, "8b_8bit_r8", "fiqa_sa", "finlora-2024", "finlora", 16, None,
         ["split: ours fiqa_sa/test.jsonl, theirs fiqa_sa/test_fingpt_variant.jsonl"]),
        (Y2024, "8b_base", "nwgi", "finlora-2024", "finlora", 16, None,
         ["F1: the source passed (prediction, gold) to f1_score"]),
        (Y2024, "8b_8bit_r8", "fpb", "finlora-2024", "finlora", 8, None, ["eval bits: ours 8, theirs 16"]),
        (Y2024, "8b_8bit_r8", "fpb", "finlora-2024", "finlora", 16, 200,
         ["rows: ours the first 200 of 1212"]),
        (Y2025, "8b_base", "fpb", "finlora-2025", "finlora2025", 8, None,
         ["eval bits: ours 8, theirs not stated"]),
        (Y2025, "8b_8bit_r8", "fpb", "finlora-2025", "strict", 8, None,
         ["scorer: ours strict, theirs finlora2025"]),
        (Y2024, "8b_8bit_r8", "fpb", "bench", "finlora", 16, None,
         ["decoding: ours greedy, theirs sampled (T 0.6, top-p 0.9, seed not recorded)",
          "new tokens: ours 10, theirs 20",
          "scored text: ours first non-empty line, theirs continuation up to a repeated 'Answer: '",
          "eos: ours every eos id, theirs tokenizer's eos id only"]),
        (Y2025, "8b_8bit_r8", "fpb", "finlora-2024", "finlora2025", 8, None,
         ["decoding: ours sampled (T 0.6, top-p 0.9, seed 1234), theirs greedy",
          "new tokens: ours 20, theirs 10",
          "scored text: ours continuation up to a repeated 'Answer: ', theirs text after the last"]),
    ],
)  # fmt: skip
def test_each_difference_is_named(block, key, task, protocol, scorer, bits, n, expected):
    score, split = ours(task, protocol, scorer, n)
    found = likeness_to_source(block, key, task, score, bits, split)
    assert not found.like_for_like
    assert len(found.differs) == len(expected)
    for text, want in zip(found.differs, expected, strict=True):
        assert text.startswith(want), (text, want)


def test_report_rows_say_like_for_like_and_what_differs():
    model = ModelSpec("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct")
    cells = [
        Cell(model, "tfns", 8, 8, 1, 8, TrainConfig(), EvalConfig(protocol="finlora-2025"), "finlora-2025"),
        Cell(model, "tfns_as_published", 8, 8, 1, 8, TrainConfig(), EvalConfig(protocol="finlora-2025"),
             "finlora-2025"),
    ]  # fmt: skip
    records = []
    for cell in cells:
        score, split = ours(cell.task, "finlora-2025", "finlora2025", accuracy=0.8, weighted_f1=0.8)
        for phase in ("train", "eval"):
            records.append(RunRecord(cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase,
                                     status="ok", started_at="2026-01-01T00:00:00+00:00",
                                     finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0, matrix="m",
                                     scores=[score] if phase == "eval" else [],
                                     data=[split] if phase == "eval" else []))  # fmt: skip
    report = build_report(
        "m", "", cells, records, PUBLISHED, deviations=("Precision: bf16, theirs fp16, because ...",)
    )
    assert dict(report.facts)["Deviations from the source"] == "Precision: bf16, theirs fp16, because ..."
    table = next(t for t in report.tables if t.key == "compare-scores")
    heads = [c.label for c in table.columns]
    rows = {r[0].text: r for r in table.rows if r[2].text == "arXiv 2505.19819"}
    assert rows["tfns"][heads.index("Like for like")].text == "no"
    assert "labels: swapped in the source's test file" in rows["tfns"][heads.index("Differs")].text
    assert rows["tfns_as_published"][heads.index("Like for like")].text == "yes"
    assert rows["tfns_as_published"][heads.index("Differs")].text == "—"
    assert "finlora-2025: greedy" in dict(report.facts)["Protocols"]
