"""The one implementation of scoring: model outputs + gold targets -> accuracy and weighted F1.

Pure (numpy + scikit-learn, no torch). Two scorers; every number must say which made it.

`finlora`: the rule of the FinLoRA/FinGPT test code. The same mapping is applied to gold and
output, then sklearn accuracy and weighted F1 on the mapped labels (gold first):
- sentiment (fpb, fiqa_sa, tfns, nwgi): "positive"/"Positive" in text -> positive, elif
  "negative"/"Negative" -> negative, else neutral. Case-sensitive on purpose: "POSITIVE" maps to
  neutral, as in the paper's code. NWGI's seven levels collapse to three this way.
- headline: "yes" in text.lower() -> "Yes", elif "no" in text.lower() -> "No", else "" (so
  "I don't know" counts as "No", as in the paper's code).
- ner: the first of organization / person / location found in text.lower(), checked in that
  order, else "" (FinGPT's code lowercases; its `person -> 'negative'` typo renames a class and
  changes no number).
- xbrl (xbrl_tags, xbrl_value): correct iff the output, with leading whitespace stripped,
  starts with the target (the paper split its outputs after "Answer:" and stripped them). For
  F1 the prediction is the target when correct, else the output text, as FinLoRA's
  test_dataset.py does.
- any other label task (a user's task file, `finlora_rule: generic`): the first label of the task
  file's list found in the lowercased output as a plain substring, else "" (wrong). A task's
  labels, its answer type and its rule come from its task file (bench.core.tasks).
The paper's NWGI script called accuracy_score/f1_score with (prediction, gold) swapped, which
changes weighted F1 (weights come from the first argument's support). We always pass gold first.

`strict`: the first valid label in the output wins (earliest position, ties to the longest
label); matching is case-insensitive on whole words, so "yesterday" is not "yes" and
"I don't know" has no label. No label -> the explicit prediction "missing", which is counted
wrong. Weighted F1 over the sorted gold label set, so "missing" only lowers recall. NWGI keeps
its seven levels under strict (a bare "positive" is not an NWGI answer). XBRL: exact match
after trimming whitespace; F1 over the gold answers, any other output counting as wrong.

`finlora2025`: FinLoRA 2025's `evaluate_accuracy` (Open-Finance-Lab/FinLoRA test/test_dataset.py),
for every task alike. The valid labels are the distinct gold strings of the scored set, lowercased;
the one found EARLIEST in the lowercased output, as a plain substring ("no" inside "know", "Assets"
inside "AssetsCurrent"), is the prediction; it is correct iff it equals the lowercased gold. F1
(sklearn weighted, gold first) pairs each gold with the gold itself when correct, else with the raw
output string. Tie-break, where FinLoRA's is not deterministic: labels found at the same position
(six xbrl_tags gold tags are prefixes of others) go to the LONGEST one; FinLoRA's stable sort keeps
the order of `set()`, which Python randomises per process for strings.

Outputs are scored as given. The lm-eval tasks (tasks/) hand over `answer_text(generation)`,
the first non-empty line, where the paper scored its whole (stripped) generation: the two agree
whenever the model stops after its answer, which fine-tuned models do.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from functools import lru_cache

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from bench.core import tasks as task_registry
from bench.core.ties import tie_fields

SCORERS = ("finlora", "strict", "finlora2025")
MISSING = "missing"



def labels_of(task: str) -> tuple[str, ...]:
    """The gold label set of a classification task as its task file declares it (the strict scorer's
    labels); () for an extraction task, whose answers are open strings."""
    return task_registry.get(task).labels


def answer_text(output: str) -> str:
    """The first non-empty line of a generation, trimmed.

    Weak models often open with a newline, so a plain "stop at \\n" would leave "" to score;
    instead generation runs without a newline stop and this keeps the first line that has text.
    """
    return next((line.strip() for line in output.splitlines() if line.strip()), "")


def answer_complete(output: str) -> bool:
    """Has the generation finished the line answer_text() takes? Tokens after that cannot change it."""
    for line in output.splitlines(keepends=True):
        if line.strip():
            return line.splitlines()[0] != line  # a line break follows the text
    return False


def finlora_sentiment(text: str) -> str:
    if "positive" in text or "Positive" in text:
        return "positive"
    if "negative" in text or "Negative" in text:
        return "negative"
    return "neutral"


def finlora_headline(text: str) -> str:
    low = text.lower()
    if "yes" in low:
        return "Yes"
    if "no" in low:
        return "No"
    return ""


def finlora_ner(text: str) -> str:
    low = text.lower()
    return next((label for label in ("organization", "person", "location") if label in low), "")


def finlora_generic(text: str, labels: Sequence[str]) -> str:
    """FinLoRA's rule carried over to any label set: the first label, in the task file's order, that the
    lowercased text contains as a plain substring; "" when none is (counted wrong, as FinLoRA's "")."""
    low = text.lower()
    return next((label for label in labels if label.lower() in low), "")


_FINLORA_MAPS: dict[str, Callable[[str], str]] = {
    "sentiment": finlora_sentiment,
    "headline": finlora_headline,
    "ner": finlora_ner,
}


@lru_cache(maxsize=64)
def _word_pattern(label: str) -> re.Pattern:
    return re.compile(rf"(?<!\w){re.escape(label)}(?!\w)", re.IGNORECASE)


def first_label(text: str, labels: Sequence[str]) -> str:
    """The label found earliest in text (whole words, any case); ties go to the longest label."""
    found = []
    for label in labels:
        match = _word_pattern(label).search(text)
        if match:
            found.append((match.start(), -len(label), label))
    return min(found)[2] if found else MISSING


def finlora2025_pairs(outputs: Sequence[str], targets: Sequence[str]) -> tuple[list[str], list[str]]:
    """(gold, prediction) as FinLoRA 2025 pairs them: the gold when the earliest label is right,
    else the raw output. Ties at one position go to the longest label (see the module notes)."""
    labels = sorted({t.lower() for t in targets})
    preds = []
    for output, target in zip(outputs, targets, strict=True):
        low = output.lower()
        found = [(at, -len(label), label) for label in labels if (at := low.find(label)) != -1]
        preds.append(target if found and min(found)[2] == target.lower() else output)
    return list(targets), preds


def _spec(task: str):
    try:
        return task_registry.get(task)
    except task_registry.TaskError as exc:
        raise ValueError(str(exc)) from exc


def _xbrl_pairs(outputs: Sequence[str], targets: Sequence[str], scorer: str) -> tuple[list, list]:
    if scorer == "finlora":
        preds = [t if o.lstrip().startswith(t) else o for o, t in zip(outputs, targets, strict=True)]
        return list(targets), preds
    return [t.strip() for t in targets], [o.strip() for o in outputs]


def mapped_labels(
    task: str, outputs: Sequence[str], targets: Sequence[str], scorer: str = "finlora"
) -> tuple[list[str], list[str]]:
    """(gold, predicted) labels as the scorer sees them, in input order."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; known: {', '.join(SCORERS)}")
    if len(outputs) != len(targets):
        raise ValueError(f"{len(outputs)} outputs but {len(targets)} targets for task {task!r}")
    if not targets:
        raise ValueError(f"nothing to score for task {task!r}: no targets")
    outputs, targets = [str(o) for o in outputs], [str(t) for t in targets]
    spec = _spec(task)
    if scorer == "finlora2025":
        return finlora2025_pairs(outputs, targets)
    if not spec.is_label:
        return _xbrl_pairs(outputs, targets, scorer)
    labels = spec.labels
    if scorer == "finlora":
        rule = _FINLORA_MAPS.get(spec.finlora_rule)
        to_label = rule or (lambda text: finlora_generic(text, labels))
        return [to_label(t) for t in targets], [to_label(o) for o in outputs]
    return [first_label(t, labels) for t in targets], [first_label(o, labels) for o in outputs]


def _f1_labels(gold: Sequence, scorer: str) -> list | None:
    # finlora: sklearn's default (union of gold and predicted); strict: the gold set only.
    # Both give the same weighted F1 (labels without gold support weigh 0); the explicit
    # list keeps "missing" out of the label set by construction.
    return sorted(set(gold)) if scorer == "strict" else None


def _weighted_f1(gold: Sequence, pred: Sequence, labels: list | None) -> float:
    return float(f1_score(gold, pred, labels=labels, average="weighted", zero_division=0))


def score(task: str, outputs: Sequence[str], targets: Sequence[str], scorer: str = "finlora") -> dict:
    """Accuracy (0..1), weighted F1 and n; strict also reports the fraction with no valid label.

    Computed once per (task, outputs, targets, scorer) in a process: lm-eval's aggregations (the
    accuracy and F1 metrics of tasks/) and the evaluation worker's record ask for the same score.
    """
    return dict(_score(task, tuple(outputs), tuple(targets), scorer))


@lru_cache(maxsize=64)
def _score(task: str, outputs: tuple[str, ...], targets: tuple[str, ...], scorer: str) -> dict:
    gold, pred = mapped_labels(task, outputs, targets, scorer)
    result = {
        "accuracy": float(accuracy_score(gold, pred)),
        "weighted_f1": _weighted_f1(gold, pred, _f1_labels(gold, scorer)),
        "n": len(gold),
    }
    if scorer == "strict" and _spec(task).is_label:
        result["missing"] = sum(p == MISSING for p in pred) / len(pred)
    if scorer == "finlora2025":  # which rows FinLoRA's hash-ordered tie-break could flip (bench.core.ties)
        result.update(tie_fields(outputs, targets))
    return result


def bootstrap_ci(
    task: str,
    outputs: Sequence[str],
    targets: Sequence[str],
    scorer: str = "finlora",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap over examples (seeded numpy Generator) for accuracy and weighted F1."""
    if not 0 < level < 1 or n_resamples < 1:
        raise ValueError(f"need 0 < level < 1 and n_resamples >= 1 (got {level}, {n_resamples})")
    gold, pred = mapped_labels(task, outputs, targets, scorer)
    # Integer codes make the 1000 F1 calls cheap; the labels keep their meaning.
    _, codes = np.unique(np.array(gold + pred, dtype=object).astype(str), return_inverse=True)
    gold_codes, pred_codes = codes[: len(gold)], codes[len(gold) :]
    labels = _f1_labels(gold_codes.tolist(), scorer)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(gold), size=(n_resamples, len(gold)))
    accuracy = (gold_codes[rows] == pred_codes[rows]).mean(axis=1)
    f1 = np.array([_weighted_f1(gold_codes[r], pred_codes[r], labels) for r in rows])
    tails = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return {
        "accuracy": tuple(float(v) for v in np.percentile(accuracy, tails)),
        "weighted_f1": tuple(float(v) for v in np.percentile(f1, tails)),
    }
