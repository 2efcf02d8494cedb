"""Rows whose finlora2025 outcome depends on the tie rule, and the score under either choice.

FinLoRA 2025's `evaluate_accuracy` takes the valid label found earliest in the output; where two labels
are found at the same position (one a prefix of the other: xbrl_tags' "Assets" / "AssetsCurrent"), its
stable sort keeps the order of a Python `set()` of strings, which hash randomisation changes per
process. bench picks the longest (bench.core.scoring). A row is tie-sensitive when its labels tie at
the earliest position and the gold is one of them: picking the other flips it from right to wrong.
The range is the score with every tie going to the longest label (bench's) and to the shortest:
accuracy from evaluate_accuracy's correct flags, F1 on its pairs (a wrong answer as its raw string, so
an output that is exactly the gold still pairs with it). Pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from sklearn.metrics import f1_score

TIE_KEYS = ("tie_sensitive", "tie_accuracy_range", "tie_weighted_f1_range")


def tied_labels(output: str, labels: Sequence[str]) -> list[str]:
    """The lowercased labels found at the earliest position of the lowercased output (several = a tie)."""
    low = output.lower()
    found = [(at, label) for label in labels if (at := low.find(label)) != -1]
    if not found:
        return []
    first = min(at for at, _ in found)
    return [label for at, label in found if at == first]


def _correct(outputs: Sequence[str], targets: Sequence[str], longest: bool) -> list[bool]:
    """Whether each row's earliest label is its gold, ties going to the longest or the shortest."""
    labels = sorted({t.lower() for t in targets})
    flags = []
    for output, target in zip(outputs, targets, strict=True):
        tied = sorted(tied_labels(output, labels), key=len, reverse=longest)
        flags.append(bool(tied) and tied[0] == target.lower())
    return flags


def _scores(outputs: Sequence[str], targets: Sequence[str], longest: bool) -> tuple[float, float]:
    """(accuracy from the correct flags, as evaluate_accuracy counts; weighted F1 on its pairs: the gold
    when right, else the raw output)."""
    flags = _correct(outputs, targets, longest)
    preds = [t if ok else o for o, t, ok in zip(outputs, targets, flags, strict=True)]
    f1 = float(f1_score(list(targets), preds, average="weighted", zero_division=0))
    return sum(flags) / len(flags), f1


def tie_fields(outputs: Sequence[str], targets: Sequence[str]) -> dict:
    """{tie_sensitive: rows, tie_accuracy_range: [lo, hi], tie_weighted_f1_range: [lo, hi]}."""
    labels = sorted({t.lower() for t in targets})
    sensitive = sum(
        1
        for output, target in zip(outputs, targets, strict=True)
        if len(tied := tied_labels(output, labels)) > 1 and target.lower() in tied
    )
    accuracy, f1 = zip(_scores(outputs, targets, True), _scores(outputs, targets, False), strict=True)
    return {
        "tie_sensitive": sensitive,
        "tie_accuracy_range": [round(min(accuracy), 5), round(max(accuracy), 5)],
        "tie_weighted_f1_range": [round(min(f1), 5), round(max(f1), 5)],
    }
