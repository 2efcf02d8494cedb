"""The finlora2025 scorer: FinLoRA 2025's evaluate_accuracy, trap by trap, on hand-made messy outputs."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest
from sklearn.metrics import f1_score

from bench.core.scoring import finlora2025_pairs, labels_of, score


def reference_2025(outputs, targets, label_order):
    """The 2025 rule as their code runs it, for a given iteration order of the label set (their
    `set()` order): labels found by str.find, a stable sort by position, raw outputs kept for F1."""
    labels = [str(t).lower() for t in label_order]
    correct, response = 0, []
    for x, y in zip(outputs, targets, strict=True):
        found = sorted(((x.lower().find(lab), lab) for lab in labels if lab in x.lower()), key=lambda f: f[0])
        ok = bool(found) and found[0][1] == y.lower()
        correct += ok
        response.append(y if ok else x)
    return correct / len(outputs), f1_score(targets, response, average="weighted")


@pytest.mark.parametrize(
    "task, output, target, correct",
    [
        ("headline", "I do not know", "No", True),  # "no" inside "not": FinLoRA counts it
        ("headline", "Not sure; yes", "Yes", False),  # "no" (in "Not") comes first
        ("headline", "yesterday it rose", "Yes", True),  # "yes" inside "yesterday"
        ("fpb", "NEGATIVE, not positive", "negative", True),  # any case; the earliest wins
        ("fpb", "The sentiment is positively neutral", "neutral", False),  # "positive" at 16 < "neutral"
        ("fpb", "", "neutral", False),  # no label at all
        ("nwgi", "positive", "mildly positive", False),  # not one of NWGI's seven levels
        ("nwgi", "It is moderately positive.", "moderately positive", True),
        ("ner", "Organisation? no: person", "person", True),  # British spelling is no label
    ],
)
def test_earliest_substring_label_decides(task, output, target, correct):
    # The valid labels are the gold strings of the scored set: give every label as gold once.
    targets = [target, *labels_of(task)]
    outputs = [output, *labels_of(task)]
    gold, pred = finlora2025_pairs(outputs, targets)
    assert (pred[0] == gold[0]) is correct
    assert pred[0] == (target if correct else output)  # a wrong answer stays its raw string


def test_valid_labels_are_the_scored_sets_gold_strings_only():
    # No gold "neutral" in this set: "neutral" is no label, so the later "positive" decides.
    gold, pred = finlora2025_pairs(["neutral then positive", "negative"], ["positive", "negative"])
    assert pred == gold


def test_f1_keeps_raw_outputs_and_matches_their_rule_on_random_messy_outputs():
    rng = random.Random(5)
    labels = list(labels_of("fpb"))
    pieces = ["positive", "Negative", "NEUTRAL", "not", "the news is", "\n", "Answer:", "positively", ""]
    outputs = [" ".join(rng.choice(pieces) for _ in range(rng.randint(0, 4))) for _ in range(300)]
    targets = [rng.choice(labels) for _ in outputs]
    ours = score("fpb", outputs, targets, "finlora2025")
    acc, f1 = reference_2025(outputs, targets, labels)  # no two sentiment labels overlap: order is moot
    assert ours["accuracy"] == pytest.approx(acc) and ours["weighted_f1"] == pytest.approx(f1)
    assert ours["n"] == 300 and "missing" not in ours


def test_xbrl_prefix_tags_tie_break_to_the_longest_gold_string():
    targets = ["us-gaap:Assets", "us-gaap:AssetsCurrent", "us-gaap:Assets"]
    outputs = ["us-gaap:AssetsCurrent", "us-gaap:AssetsCurrent\nAnswer:", "US-GAAP:assets, net"]
    gold, pred = finlora2025_pairs(outputs, targets)
    # "us-gaap:Assets" and "us-gaap:AssetsCurrent" both start at 0 in the first output: the longest wins,
    # where FinLoRA's answer depends on set() order (it counts row 0 right in one order, wrong in the other).
    assert pred == ["us-gaap:AssetsCurrent", "us-gaap:AssetsCurrent", "us-gaap:Assets"]
    assert reference_2025(outputs[:1], targets[:1], ["us-gaap:Assets", "us-gaap:AssetsCurrent"])[0] == 1.0
    assert reference_2025(outputs[:1], targets[:1], ["us-gaap:AssetsCurrent", "us-gaap:Assets"])[0] == 0.0
    assert score("xbrl_tags", outputs, targets, "finlora2025")["accuracy"] == pytest.approx(2 / 3)


def test_differs_from_strict_where_the_paper_says_it_does():
    # "no" inside "know" and "yes" inside "yesterday": 2025 finds labels, strict's whole words do not.
    outputs, targets = ["I don't know", "yesterday, maybe"], ["No", "Yes"]
    assert score("headline", outputs, targets, "finlora2025")["accuracy"] == 1.0
    assert score("headline", outputs, targets, "strict")["accuracy"] == 0.0


def test_the_tie_break_does_not_depend_on_the_hash_seed():
    code = (
        "from bench.core.scoring import score;"
        "print(score('xbrl_tags', ['us-gaap:AssetsCurrent', 'x'],"
        " ['us-gaap:Assets', 'us-gaap:AssetsCurrent'], 'finlora2025'))"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
            text=True, check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }  # fmt: skip
    assert len(runs) == 1
