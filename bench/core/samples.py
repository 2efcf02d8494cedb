"""Per-row outputs of an evaluation: the samples files the evaluation worker writes. Pure (no torch).

bench.workers.evaluate writes one `samples_<task>.jsonl` per task in the cell's directory, a line per
test row: {"doc_id", "output" (the text the scorers score), "raw", "target"}; the eval record's
artifacts name each file by a path relative to the results directory ("samples_fpb": "cells/.../...").
Paired comparisons read them back here, by doc_id, so two cells are compared row by row.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.core.paired import PairedScores, paired_scores
from bench.core.records import RunRecord
from bench.core.scoring import mapped_labels


@dataclass(frozen=True)
class Rows:
    """One cell's outputs on one task, in doc_id order."""

    doc_ids: tuple[int, ...]
    outputs: tuple[str, ...]
    targets: tuple[str, ...]


class SampleReader:
    """Reads (and keeps) the samples file of (eval record, task); `why` says what is missing."""

    def __init__(self, results_dir: Path):
        self.root = Path(results_dir)
        self._cache: dict[Path, Rows | str] = {}

    def __call__(self, record: RunRecord, task: str) -> Rows | str:
        """The rows, or a sentence saying why there are none."""
        name = record.artifacts.get(f"samples_{task}")
        if not name:
            return f"the eval record has no samples_{task} file"
        path = self.root / name
        if path not in self._cache:
            self._cache[path] = _read(path)
        return self._cache[path]


def _read(path: Path) -> Rows | str:
    if not path.is_file():
        return f"{path} is missing"
    rows = []
    try:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append((int(row["doc_id"]), str(row["output"]), str(row["target"])))
    except (ValueError, KeyError, TypeError) as exc:
        return f"{path} is unreadable ({exc})"
    if not rows:
        return f"{path} is empty"
    rows.sort()
    ids, outputs, targets = zip(*rows, strict=True)
    return Rows(ids, outputs, targets)


def compare_rows(task: str, scorer: str, a: Rows, b: Rows, seed: int = 0) -> PairedScores | str:
    """A minus B on the rows both scored, or why they cannot be paired (different test rows)."""
    if a.doc_ids != b.doc_ids or a.targets != b.targets:
        return f"different test rows ({len(a.doc_ids)} vs {len(b.doc_ids)}): not paired"
    gold, pred_a = mapped_labels(task, a.outputs, a.targets, scorer)
    _, pred_b = mapped_labels(task, b.outputs, b.targets, scorer)
    return paired_scores(gold, pred_a, pred_b, seed=seed)


def majority_rows(rows: Rows, task: str, scorer: str) -> Rows:
    """A constant adapter that always answers the most frequent gold label of these rows (ties: the
    first in label order): the trivial model a paired gate must beat too."""
    gold, _ = mapped_labels(task, rows.outputs, rows.targets, scorer)
    label = Counter(sorted(gold)).most_common(1)[0][0]
    answer = next(t for t, g in zip(rows.targets, gold, strict=True) if g == label)
    return Rows(rows.doc_ids, (answer,) * len(rows.doc_ids), rows.targets)
