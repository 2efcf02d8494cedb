"""Do bench's evaluation and the paper loop score the same rows the same way?"""

from __future__ import annotations

import json
from pathlib import Path

from bench.core.scoring import SCORERS, answer_text, score


def score_check(task: str, bench_samples: Path, paper: dict) -> dict:
    """Both outputs through bench's answer filter (tasks/: first non-empty line), then bench.core.scoring.

    bench's samples hold the filtered output and the raw generation (new tokens only); the paper loop
    holds the text after "Answer: " of the fully decoded sequence.
    """
    rows = [json.loads(line) for line in bench_samples.read_text().splitlines()]
    if [r["target"] for r in rows] != paper["targets"]:
        raise ValueError("bench and the paper loop scored different rows")
    bench_out = [r["output"] for r in rows]
    paper_out = [answer_text(o) for o in paper["outputs"]]
    targets = paper["targets"]
    scores = {s: (score(task, bench_out, targets, s), score(task, paper_out, targets, s)) for s in SCORERS}
    return {
        "rows": len(rows),
        "scores_identical": all(b == p for b, p in scores.values()),
        "filtered_equal": sum(b == p for b, p in zip(bench_out, paper_out, strict=True)),
        "raw_equal": sum(r["raw"] == o for r, o in zip(rows, paper["outputs"], strict=True)),
        "scores": {
            s: {k: round(v, 4) for k, v in b.items() if isinstance(v, float)} for s, (b, _) in scores.items()
        },
    }
