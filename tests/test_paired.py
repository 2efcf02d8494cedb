"""The paired statistics against answers known in advance (bench.core.paired)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binom, binomtest
from sklearn.metrics import f1_score

from bench.core.paired import (
    Interval,
    equivalence,
    holm,
    mcnemar_exact,
    mean_sd,
    paired_bootstrap,
    paired_scores,
    verdict,
    weighted_f1,
)


def test_bootstrap_of_a_constant_shift_is_exactly_that_shift():
    rng = np.random.default_rng(1)
    b = rng.normal(10, 3, size=200)
    shifted = paired_bootstrap(b + 0.3, b)
    assert shifted.estimate == pytest.approx(0.3)
    assert (shifted.low, shifted.high) == (pytest.approx(0.3), pytest.approx(0.3))
    ratio = paired_bootstrap(2 * b, b, compare=np.divide)  # e.g. per-step seconds of a speed gate
    assert (ratio.estimate, ratio.low, ratio.high) == (pytest.approx(2), pytest.approx(2), pytest.approx(2))


def test_accuracy_difference_matches_the_normal_theory_of_its_paired_rows():
    # A right on rows 0-79, B right on rows 0-59: the difference is 0.2 exactly, each row's difference is
    # 1 (20 rows) or 0, so its standard error is sqrt(0.2 * 0.8 / 100) = 0.04: about 0.2 ± 0.078 at 95%.
    gold = ["positive"] * 100
    a = ["positive"] * 80 + ["negative"] * 20
    b = ["positive"] * 60 + ["negative"] * 40
    result = paired_scores(gold, a, b, n_resamples=4000, seed=3)
    assert result.accuracy.estimate == pytest.approx(0.2)
    assert result.accuracy.low == pytest.approx(0.2 - 1.96 * 0.04, abs=0.02)
    assert result.accuracy.high == pytest.approx(0.2 + 1.96 * 0.04, abs=0.02)
    assert result.accuracy_90.low > result.accuracy.low and result.accuracy_90.high < result.accuracy.high
    assert (result.a_only, result.b_only) == (20, 0)


def test_the_bootstrap_is_seeded():
    gold, a, b = ["x", "y"] * 30, ["x"] * 60, ["y"] * 60
    assert paired_scores(gold, a, b, seed=5) == paired_scores(gold, a, b, seed=5)
    assert paired_scores(gold, a, b, seed=5).accuracy != paired_scores(gold, a, b, seed=6).accuracy


def test_weighted_f1_equals_sklearn_on_every_resample():
    rng = np.random.default_rng(0)
    gold, pred = rng.integers(0, 4, size=(50, 80)), rng.integers(0, 5, size=(50, 80))
    pred[:, :10] = gold[:, :10]
    ours = weighted_f1(gold, pred, 5)
    theirs = [f1_score(g, p, average="weighted", zero_division=0) for g, p in zip(gold, pred, strict=True)]
    assert ours == pytest.approx(theirs)


def test_paired_f1_point_estimate_is_sklearns_difference():
    gold = ["negative", "neutral", "positive", "neutral", "positive", "negative"] * 5
    a = ["negative", "neutral", "positive", "positive", "positive", "neutral"] * 5
    b = ["neutral"] * 30
    result = paired_scores(gold, a, b)
    expected = f1_score(gold, a, average="weighted") - f1_score(gold, b, average="weighted", zero_division=0)
    assert result.weighted_f1.estimate == pytest.approx(expected)


@pytest.mark.parametrize(("a_only", "b_only"), [(10, 2), (2, 10), (7, 7), (0, 5), (30, 12), (1, 0)])
def test_mcnemar_exact_is_scipys_binomial_test_and_the_textbook_sum(a_only, b_only):
    n, k = a_only + b_only, min(a_only, b_only)
    textbook = min(1.0, 2 * binom.cdf(k, n, 0.5))  # twice the smaller tail of Binomial(n, 1/2)
    assert mcnemar_exact(a_only, b_only) == pytest.approx(binomtest(a_only, n, 0.5).pvalue)
    assert mcnemar_exact(a_only, b_only) == pytest.approx(textbook)


def test_mcnemar_known_value_and_no_discordant_rows():
    assert mcnemar_exact(10, 2) == pytest.approx(2 * (1 + 12 + 66) / 4096)  # 0.03857
    assert mcnemar_exact(0, 0) == 1.0


def test_holm_on_a_hand_worked_example():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> kept monotone at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


@pytest.mark.parametrize(
    ("low", "high", "answer"),
    [
        (-1.0, 1.5, "equivalent"),  # inside ±2
        (2.5, 4.0, "different"),  # wholly above +2
        (-5.0, -2.0, "different"),  # wholly below -2 (touching the margin is outside)
        (0.5, 2.5, "cannot tell"),  # straddles +2
        (-3.0, 3.0, "cannot tell"),  # straddles both
    ],
)
def test_tost_inside_outside_and_straddling_the_margin(low, high, answer):
    assert equivalence(Interval((low + high) / 2, low, high, 0.9), margin=2.0) == answer


def test_identical_outputs_differ_by_zero_and_are_not_significant():
    gold = ["positive", "negative", "neutral", "neutral"] * 25
    outputs = ["positive", "neutral", "neutral", "negative"] * 25
    result = paired_scores(gold, outputs, list(outputs))
    for interval in (result.accuracy, result.weighted_f1, result.accuracy_90):
        assert (interval.estimate, interval.low, interval.high) == (0, 0, 0)
    assert result.mcnemar_p == 1.0
    assert verdict(result.accuracy.estimate, holm([result.mcnemar_p])[0]) == "no significant difference"
    assert equivalence(result.accuracy_90, margin=0.01) == "equivalent"


def test_verdict_and_spread():
    assert verdict(0.1, 0.01) == "better" and verdict(-0.1, 0.01) == "worse"
    assert verdict(0.1, 0.05) == "no significant difference"  # the 5% level is exclusive
    mean, sd = mean_sd([0.6, 0.7, 0.8])
    assert (mean, sd) == (pytest.approx(0.7), pytest.approx(0.1))
    assert mean_sd([0.5]) == (0.5, None)
    assert not math.isnan(mean)
