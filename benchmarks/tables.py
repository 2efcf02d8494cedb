"""The medians table and the bench / baseline ratios that benchmarks/speed.py prints."""

from __future__ import annotations

import statistics

GOALS = {"train_tokens_per_s": 1.5, "eval_examples_per_s": 3.0}  # issue 7's goals, as ratios to baseline


def medians(rounds: list[dict]) -> dict | None:
    if not rounds:
        return None
    return {
        s: {k: round(statistics.median(r[s][k] for r in rounds), 3) for k in rounds[0][s]} for s in rounds[0]
    }


LABELS = {
    "bench": "bench (DeepSpeed worker)",
    "plain_longest": "plain Trainer, pad to longest",
    "plain_max_length": "plain Trainer, pad to max_length",
}


def label(side: str) -> str:
    if side.startswith("bench_b"):
        return f"bench lm-eval, batch {side[7:]}"
    return f"paper loop, batch {side[7:]}" if side.startswith("paper_b") else LABELS[side]


def pairs(train: dict | None, evals: dict | None) -> list[tuple[str, str, str]]:
    """(phase and metric, bench side, baseline side) for every ratio to show."""
    out = [
        (f"train_{k}", "bench", s)
        for s in train or {}
        if s != "bench"
        for k in ("tokens_per_s", "examples_per_s")
    ]
    paper = next((s for s in evals or {} if s.startswith("paper")), None)
    return out + [("eval_examples_per_s", s, paper) for s in evals or {} if s.startswith("bench")]


def report(train_rounds: list[dict], eval_rounds: list[dict]) -> tuple[list[str], dict]:
    """The medians table, then each ratio twice: of the medians, and per repetition (both sides of a
    repetition ran back to back, so their ratio shrugs off load that drifts between repetitions)."""
    train, evals = medians(train_rounds), medians(eval_rounds)
    lines = [f"{'phase':6} {'path':32} {'tokens/s':>10} {'examples/s':>11} {'seconds':>8}"]
    for phase, sides in (("train", train or {}), ("eval", evals or {})):
        for side, m in sides.items():
            tok = f"{m['tokens_per_s']:10.1f}" if "tokens_per_s" in m else " " * 10
            secs = m.get("train_s", m.get("eval_s"))
            lines.append(f"{phase:6} {label(side):32} {tok} {m['examples_per_s']:11.2f} {secs:8.2f}")
    ratios = {}
    for metric, ours, base in pairs(train, evals):
        phase, key = metric.split("_", 1)
        rounds, table = (train_rounds, train) if phase == "train" else (eval_rounds, evals)
        paired = sorted(r[ours][key] / r[base][key] for r in rounds)
        name = f"{metric}: {ours} / {base}"
        ratios[name] = round(table[ours][key] / table[base][key], 2)
        ratios[name + " (per repetition)"] = [round(v, 2) for v in paired]
        goal = GOALS.get(metric)
        verdict = f"  goal >= {goal}x: {'met' if ratios[name] >= goal else 'missed'}" if goal else ""
        lines.append(
            f"ratio {name} = {ratios[name]}x (per repetition: median {statistics.median(paired):.2f}x,"
            f" range {paired[0]:.2f}-{paired[-1]:.2f}x){verdict}"
        )
    return lines, ratios
