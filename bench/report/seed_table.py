"""Training noise beside test-set noise: each configuration's spread across training seeds next to the
single-run bootstrap interval. Pure (no torch).

The standard deviation across seeds says how much the number moves when only the training seed
changes (same data, same test rows); the bootstrap half-width says how much it would move with another
test set of the same size. A difference between configurations smaller than both says nothing.
"""

from __future__ import annotations

from bench.core.metrics import METRICS, Metric
from bench.core.paired import mean_sd
from bench.report.model import (
    CellState,
    Column,
    Entry,
    Table,
    config_key,
    config_labels,
    eval_tasks,
    swept,
    task_order,
)

SPREAD_ACC = Metric("accuracy_seed_sd", "Acc", "%", "pct", False)
SPREAD_F1 = Metric("weighted_f1_seed_sd", "F1", "", "f1", False)


def seed_table(states: list[CellState], scorer: str) -> Table | None:
    """One row per (task, configuration) that ran with two or more training seeds; None when none did."""
    labels = config_labels([st.cell for st in states])
    groups: dict[tuple[str, str], list[tuple[int, dict]]] = {}
    for st in states:
        if st.cell.is_base or st.random or not swept(st.cell, "seed") or st.outcome[0] != "ok":
            continue
        for task in eval_tasks(st.cell):
            score = st.score(task, scorer)
            if score is not None:
                label = labels[config_key(st.cell)].rsplit(" · seed ", 1)[0]
                groups.setdefault((task, label), []).append((st.cell.train.seed, score))
    rows = [
        _row(task, label, sorted(found, key=lambda x: x[0]))
        for (task, label), found in sorted(groups.items(), key=lambda kv: (task_order(kv[0][0]), kv[0]))
        if len(found) > 1
    ]
    if not rows:
        return None
    columns = (
        Column("Task"), Column("Configuration"), Column("Seeds"),
        Column("mean ± sd", "Accuracy", SPREAD_ACC), Column("one run's 95% CI", "Accuracy"),
        Column("per seed", "Accuracy"),
        Column("mean ± sd", "Weighted F1", SPREAD_F1), Column("one run's 95% CI", "Weighted F1"),
    )  # fmt: skip
    notes = (
        f"{scorer} scorer. mean ± sd: over training seeds (sample standard deviation), the same test rows "
        "for every seed: training noise.",
        "one run's 95% CI: the mean half-width of each seed's bootstrap interval over the test rows: "
        "test-set noise. A difference smaller than both says nothing.",
    )
    return Table(f"seeds-{scorer}", f"Seed spread — {scorer} scorer", columns, tuple(rows), notes)


def _row(task: str, label: str, found: list[tuple[int, dict]]) -> tuple[Entry, ...]:
    seeds = ", ".join(str(seed) for seed, _ in found)
    row = [Entry(task, task), Entry(label), Entry(f"{len(found)} ({seeds})", len(found))]
    for key, scale in (("accuracy", 100), ("weighted_f1", 1)):
        values = [s[key] for _, s in found if s.get(key) is not None]
        if len(values) < 2:
            row += [Entry("n/a", status="none")] * (2 if key == "weighted_f1" else 3)
            continue
        mean, sd = mean_sd(values)
        text = f"{METRICS[key].format(mean)} ± {METRICS[key].format(sd)}"
        row.append(Entry(text, mean))
        halves = [(s[f"{key}_ci"][1] - s[f"{key}_ci"][0]) / 2 for _, s in found if s.get(f"{key}_ci")]
        half = sum(halves) / len(halves) if halves else None
        row.append(
            Entry(f"±{METRICS[key].format(half)}", half) if half is not None else Entry("—", status="none")
        )
        if key == "accuracy":
            row.append(Entry(", ".join(f"{scale * v:.1f}" for v in values)))
    return tuple(row)
