"""Paired statistics: is A better than B on the same rows? Pure (numpy, scipy; no torch).

Two cells scored on the same test rows are compared row by row, never through their separate
intervals (two overlapping 95% intervals can hide a clear difference, because both carry the same
test-set noise). The pieces, each usable alone:
- `paired_bootstrap`: any statistic of per-row (or per-step) values of A and B, rows resampled jointly
  (seeded), percentile interval of the difference or ratio. A speed gate can use it on per-step times.
- `paired_scores`: accuracy and weighted-F1 differences of two prediction lists against one gold list,
  with their bootstrap intervals (95% and 90%) and McNemar's exact p-value for accuracy.
- `holm`: Holm's step-down correction of a family of p-values (the report's paired table).
- `equivalence`: two one-sided tests (TOST) read off the 90% interval against a ±margin.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

ALPHA = 0.05
N_RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    estimate: float  # the statistic on all rows
    low: float
    high: float
    level: float  # 0.95: a 95% percentile interval

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class PairedScores:
    """A minus B on n shared rows; accuracy and F1 as fractions (0..1)."""

    n: int
    accuracy: Interval  # 95%
    weighted_f1: Interval  # 95%
    accuracy_90: Interval  # 90%: the TOST interval at the 5% level
    mcnemar_p: float  # exact two-sided, accuracy
    a_only: int  # rows A got right and B wrong
    b_only: int  # rows B got right and A wrong


def resample_rows(n_rows: int, n_resamples: int = N_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n_resamples, n_rows) row indices drawn with replacement from a seeded numpy Generator."""
    if n_rows < 1 or n_resamples < 1:
        raise ValueError(f"need at least one row and one resample (got {n_rows}, {n_resamples})")
    return np.random.default_rng(seed).integers(0, n_rows, size=(n_resamples, n_rows))


def percentile_interval(estimate: float, draws: np.ndarray, level: float) -> Interval:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), not {level}")
    low, high = np.percentile(draws, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return Interval(float(estimate), float(low), float(high), level)


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    statistic: Callable = np.mean,
    compare: Callable = np.subtract,
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
    level: float = 0.95,
) -> Interval:
    """compare(statistic(A), statistic(B)) with a percentile interval; row i of A and of B are one item.

    statistic is called as statistic(values, axis=-1) (np.mean, np.median, ...); compare is np.subtract
    (a difference) or np.divide (a ratio, e.g. A's tokens/s over B's).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same length: {a.shape} vs {b.shape}")
    rows = resample_rows(len(a), n_resamples, seed)
    draws = compare(statistic(a[rows], axis=-1), statistic(b[rows], axis=-1))
    return percentile_interval(compare(statistic(a), statistic(b)), draws, level)


def weighted_f1(gold: np.ndarray, pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Weighted F1 of every row of gold/pred (2-D integer label codes), as sklearn's f1_score(average=
    "weighted", zero_division=0): per-label F1 weighted by gold support. Vectorised over resamples, and
    counted per label rather than through a confusion matrix, so open-answer tasks (XBRL: a label per
    distinct wrong output) stay at resamples x labels numbers."""
    gold, pred = np.atleast_2d(gold), np.atleast_2d(pred)
    resamples, n = gold.shape
    offset = np.arange(resamples)[:, None] * n_labels
    size = resamples * n_labels

    def per_label(codes, weights=None):
        flat = np.bincount((offset + codes).ravel(), weights=None if weights is None else weights.ravel(),
                           minlength=size)  # fmt: skip
        return flat.reshape(resamples, n_labels)

    support, predicted = per_label(gold), per_label(pred)
    hits = per_label(gold, (gold == pred).astype(float))
    total = support + predicted
    f1 = np.divide(2 * hits, total, out=np.zeros(hits.shape), where=total > 0)
    return (f1 * support).sum(axis=1) / n


def paired_scores(
    gold: Sequence[str],
    pred_a: Sequence[str],
    pred_b: Sequence[str],
    n_resamples: int = N_RESAMPLES,
    seed: int = 0,
) -> PairedScores:
    """A minus B: accuracy and weighted F1 on the same rows, resampled jointly (one index set for all)."""
    if not len(gold) == len(pred_a) == len(pred_b) or not gold:
        raise ValueError(
            f"paired scores need equal, non-empty lists ({len(gold)}, {len(pred_a)}, {len(pred_b)})"
        )
    labels, codes = np.unique(np.array([*gold, *pred_a, *pred_b], dtype=str), return_inverse=True)
    n = len(gold)
    g, pa, pb = codes[:n], codes[n : 2 * n], codes[2 * n :]
    right_a, right_b = (pa == g).astype(float), (pb == g).astype(float)
    rows = resample_rows(n, n_resamples, seed)
    acc_draws = right_a[rows].mean(axis=1) - right_b[rows].mean(axis=1)
    acc = float(right_a.mean() - right_b.mean())
    k = len(labels)
    f1 = float(weighted_f1(g, pa, k)[0] - weighted_f1(g, pb, k)[0])
    f1_draws = weighted_f1(g[rows], pa[rows], k) - weighted_f1(g[rows], pb[rows], k)
    a_only, b_only = (
        int(((right_a == 1) & (right_b == 0)).sum()),
        int(((right_b == 1) & (right_a == 0)).sum()),
    )
    return PairedScores(
        n=n,
        accuracy=percentile_interval(acc, acc_draws, 0.95),
        weighted_f1=percentile_interval(f1, f1_draws, 0.95),
        accuracy_90=percentile_interval(acc, acc_draws, 0.90),
        mcnemar_p=mcnemar_exact(a_only, b_only),
        a_only=a_only,
        b_only=b_only,
    )


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """McNemar's exact test: the discordant rows split as Binomial(a_only + b_only, 1/2) under "no
    difference"; two-sided p (1.0 when no row is discordant: nothing tells A and B apart)."""
    discordant = a_only + b_only
    if discordant == 0:
        return 1.0
    return float(binomtest(a_only, discordant, 0.5, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input order.

    Sorted ascending, the i-th smallest (i from 0) is multiplied by (m - i), then made non-decreasing
    and capped at 1. Reject where adjusted p < alpha.
    """
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def verdict(delta: float, adjusted_p: float, alpha: float = ALPHA) -> str:
    """better / worse / no significant difference, from a Holm-adjusted p-value and A - B's sign."""
    if adjusted_p >= alpha or delta == 0:
        return "no significant difference"
    return "better" if delta > 0 else "worse"


def equivalence(interval_90: Interval, margin: float) -> str:
    """TOST at the 5% level, in the interval's units: "equivalent" when the 90% interval lies inside
    (-margin, +margin); "different" when it lies wholly outside; otherwise "cannot tell"."""
    if margin <= 0:
        raise ValueError(f"the margin must be positive, not {margin}")
    if -margin < interval_90.low and interval_90.high < margin:
        return "equivalent"
    if interval_90.low >= margin or interval_90.high <= -margin:
        return "different"
    return "cannot tell"


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n - 1); no deviation from one value."""
    data = np.asarray(values, dtype=float)
    return float(data.mean()), (float(data.std(ddof=1)) if len(data) > 1 else None)
