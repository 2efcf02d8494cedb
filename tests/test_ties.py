"""finlora2025's tie-sensitive rows: labels found at one place, one a prefix of the other."""

from __future__ import annotations

from bench.core.scoring import score
from bench.core.ties import tie_fields, tied_labels


def test_a_prefix_pair_at_one_place_is_a_tie_and_the_gold_among_them_makes_the_row_sensitive():
    labels = ["assets", "assetscurrent", "liabilities"]
    assert tied_labels("AssetsCurrent is the tag", labels) == ["assets", "assetscurrent"]
    assert tied_labels("Liabilities, then Assets", labels) == ["liabilities"]
    targets = ["AssetsCurrent", "Assets", "Liabilities", "Liabilities"]
    outputs = ["AssetsCurrent", "AssetsCurrent", "Liabilities", "AssetsCurrent"]
    found = tie_fields(outputs, targets)
    # rows 1 and 2 tie between Assets and AssetsCurrent with the gold among them; row 4's gold is not
    assert found["tie_sensitive"] == 2
    # longest (bench): rows 1, 3 right = 0.5; shortest: rows 2, 3 right = 0.5
    assert found["tie_accuracy_range"] == [0.5, 0.5]
    # F1 pairs a wrong answer with its raw output: row 1 "AssetsCurrent" still pairs with its gold
    assert found["tie_weighted_f1_range"][0] < found["tie_weighted_f1_range"][1]


def test_the_range_spans_both_tie_choices():
    targets = ["AssetsCurrent", "AssetsCurrent", "Assets"]
    outputs = ["AssetsCurrent", "AssetsCurrent x", "nothing"]
    found = tie_fields(outputs, targets)
    assert found["tie_sensitive"] == 2
    assert found["tie_accuracy_range"] == [0.0, round(2 / 3, 5)]  # shortest: both wrong; longest: both right


def test_finlora2025_scores_carry_the_tie_fields_and_bench_takes_the_longest():
    targets = ["AssetsCurrent", "AssetsCurrent", "Assets"]
    outputs = ["AssetsCurrent", "AssetsCurrent x", "nothing"]
    result = score("xbrl_tags", outputs, targets, "finlora2025")
    assert result["tie_sensitive"] == 2
    assert abs(result["accuracy"] - 2 / 3) < 1e-9 and result["tie_accuracy_range"][1] == round(2 / 3, 5)
    assert "tie_sensitive" not in score("xbrl_tags", outputs, targets, "strict")


def test_no_prefix_labels_no_sensitive_rows():
    found = tie_fields(["positive", "negative"], ["positive", "neutral"])
    assert found["tie_sensitive"] == 0 and found["tie_accuracy_range"] == [0.5, 0.5]
