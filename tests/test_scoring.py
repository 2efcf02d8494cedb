"""bench.core.scoring: both scorers on hand-made messy outputs, the bootstrap, and real rows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sklearn.metrics import f1_score

from bench.core.data import load_splits, task_files
from bench.core.scoring import (
    MISSING,
    SCORERS,
    answer_text,
    bootstrap_ci,
    finlora_headline,
    finlora_ner,
    finlora_sentiment,
    first_label,
    labels_of,
    mapped_labels,
    score,
)
from bench.core.tasks import builtin_tasks

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"no FinLoRA data at {path}: set BENCH_DATA to the data directory")
    return path


@pytest.mark.parametrize(
    "text, label",
    [
        ("positive", "positive"),
        ("Positive outlook", "positive"),
        ("POSITIVE", "neutral"),  # the paper's check is case-sensitive: keep the trap
        ("negative, not positive", "positive"),  # positive is checked first, wherever it is
        ("Negative", "negative"),
        ("mildly negative", "negative"),  # NWGI's levels collapse to three
        ("moderately positive", "positive"),
        ("", "neutral"),
        ("I cannot tell", "neutral"),
    ],
)
def test_finlora_sentiment(text, label):
    assert finlora_sentiment(text) == label


@pytest.mark.parametrize(
    "text, label",
    [
        ("Yes", "Yes"),
        ("YES!", "Yes"),
        ("I don't know", "No"),  # "no" inside "know": the paper's rule, kept
        ("nothing", "No"),
        ("yesterday: no", "Yes"),
        ("maybe", ""),
    ],
)
def test_finlora_headline(text, label):
    assert finlora_headline(text) == label


@pytest.mark.parametrize(
    "text, label",
    [
        ("person", "person"),
        ("a person at an Organization", "organization"),  # checked in the order org, person, loc
        ("LOCATION", "location"),
        ("company", ""),
    ],
)
def test_finlora_ner(text, label):
    assert finlora_ner(text) == label


def test_answer_text_keeps_first_line_with_text():
    assert answer_text("\n\n  positive\nInput: negative") == "positive"
    assert answer_text(" us-gaap:Assets \n") == "us-gaap:Assets"
    assert answer_text("\n \n") == ""


@pytest.mark.parametrize(
    "text, label",
    [
        ("Mildly Positive, I think", "mildly positive"),
        ("positive", MISSING),  # not one of NWGI's seven levels
        ("strong negative or strong positive", "strong negative"),
        ("", MISSING),
    ],
)
def test_strict_nwgi_keeps_seven_levels(text, label):
    assert first_label(text, labels_of("nwgi")) == label


@pytest.mark.parametrize(
    "task, text, label",
    [
        ("fpb", "POSITIVE", "positive"),  # strict is case-insensitive
        ("fpb", "negative, not positive", "negative"),  # earliest label wins
        ("fpb", "positively", MISSING),  # whole words only
        ("headline", "I don't know", MISSING),
        ("headline", "yesterday", MISSING),
        ("headline", "no.", "No"),
        ("ner", "Person", "person"),
    ],
)
def test_strict_first_label(task, text, label):
    assert first_label(text, labels_of(task)) == label


def test_strict_tie_goes_to_longest_label():
    assert first_label("pos neg", ("pos", "pos neg")) == "pos neg"
    assert first_label("pos", ("pos", "pos neg")) == "pos"


def test_xbrl_finlora_is_prefix_strict_is_exact():
    targets = ["us-gaap:Assets", "us-gaap:Assets", "us-gaap:Assets", "16116000000"]
    outputs = ["  us-gaap:AssetsCurrent", "The answer is us-gaap:Assets", " us-gaap:Assets ", "16116000000\n"]
    assert score("xbrl_tags", outputs, targets)["accuracy"] == pytest.approx(3 / 4)
    assert score("xbrl_tags", outputs, targets, "strict")["accuracy"] == pytest.approx(2 / 4)


def test_finlora_f1_passes_gold_first():
    targets = ["positive", "positive", "positive", "negative", "neutral"]
    outputs = ["positive", "negative", "negative", "negative", "positive"]
    gold, pred = mapped_labels("fpb", outputs, targets)
    result = score("fpb", outputs, targets)
    assert result["weighted_f1"] == pytest.approx(f1_score(gold, pred, average="weighted"))
    # The paper's NWGI script swapped the arguments; that gives a different number here.
    assert result["weighted_f1"] != pytest.approx(f1_score(pred, gold, average="weighted"))


def test_strict_missing_only_hurts_recall():
    targets = ["positive", "negative", "negative"]
    outputs = ["positive", "I have no idea", "negative"]
    result = score("fpb", outputs, targets, "strict")
    assert result["accuracy"] == pytest.approx(2 / 3)
    assert result["missing"] == pytest.approx(1 / 3)
    # labels = the gold set: "missing" is never a class of its own
    expected = f1_score(
        targets, ["positive", MISSING, "negative"], labels=["negative", "positive"], average="weighted"
    )
    assert result["weighted_f1"] == pytest.approx(expected)


def test_scorers_disagree_on_messy_outputs():
    targets = ["positive", "neutral", "negative", "positive"]
    outputs = ["\nPOSITIVE", "I think neutral", "not positive but negative", "Positive."]
    assert score("fpb", outputs, targets)["accuracy"] == pytest.approx(2 / 4)
    assert score("fpb", outputs, targets, "strict")["accuracy"] == pytest.approx(3 / 4)


def test_nwgi_collapses_under_finlora_only():
    targets = ["mildly positive", "strong negative"]
    outputs = ["moderately positive", "mildly negative"]
    assert score("nwgi", outputs, targets)["accuracy"] == 1.0
    assert score("nwgi", outputs, targets, "strict")["accuracy"] == 0.0


def test_score_rejects_bad_input():
    with pytest.raises(ValueError, match="outputs but"):
        score("fpb", ["positive"], ["positive", "neutral"])
    with pytest.raises(ValueError, match="unknown scorer"):
        score("fpb", ["positive"], ["positive"], scorer="lenient")
    with pytest.raises(ValueError, match="unknown task"):
        score("fpbb", ["positive"], ["positive"])
    with pytest.raises(ValueError, match="nothing to score"):
        score("fpb", [], [])


@pytest.mark.parametrize("scorer", SCORERS)
def test_bootstrap_is_seeded_and_contains_point(scorer):
    targets = ["positive", "negative", "neutral", "positive", "neutral"] * 40
    outputs = ["positive", "positive", "neutral", "\nnegative", "?"] * 40
    first = bootstrap_ci("fpb", outputs, targets, scorer, n_resamples=200, seed=3)
    assert first == bootstrap_ci("fpb", outputs, targets, scorer, n_resamples=200, seed=3)
    assert first != bootstrap_ci("fpb", outputs, targets, scorer, n_resamples=200, seed=4)
    point = score("fpb", outputs, targets, scorer)
    for key in ("accuracy", "weighted_f1"):
        low, high = first[key]
        assert 0 <= low <= point[key] <= high <= 1


def test_real_rows_score_perfectly_when_answered_exactly(data_dir):
    for task in builtin_tasks():
        if task_files(task, data_dir) == (None, None):
            continue
        targets = [r["target"] for r in load_splits(task, data_dir).test[:300]]
        noisy = [answer_text(f"\n {t}\nInput: something else") for t in targets]
        for scorer in SCORERS:
            result = score(task, noisy, targets, scorer)
            assert (result["accuracy"], result["weighted_f1"], result["n"]) == (1.0, 1.0, len(targets)), task


def test_real_nwgi_rows_map_to_three_classes(data_dir):
    targets = [r["target"] for r in load_splits("nwgi", data_dir).test]
    gold, _ = mapped_labels("nwgi", targets, targets)
    assert set(gold) == {"negative", "neutral", "positive"}
    gold, _ = mapped_labels("nwgi", targets, targets, "strict")
    assert set(gold) == set(labels_of("nwgi"))


@pytest.mark.parametrize(
    ("output", "complete"),
    [
        ("", False), ("\n\n", False), ("positive", False), ("\npositive", False), ("  neutral \t", False),
        ("positive\n", True), ("\n\npositive\nThe", True), ("negative\r\n", True), (" x\u2028", True),
    ],
)  # fmt: skip
def test_answer_complete_once_the_scored_line_has_ended(output, complete):
    from bench.core.scoring import answer_complete, answer_text

    assert answer_complete(output) is complete
    if complete:  # nothing generated afterwards changes what is scored
        assert answer_text(output + "more text\nand more") == answer_text(output)
