"""The paired-differences table and the equivalence answers. Pure (no torch).

Pairs come from bench.core.comparisons (every adapter against its base row, then the matrix's
`compare` or its default), statistics from bench.core.paired on the per-row samples files. One family
of tests per report: McNemar p-values are Holm-corrected across every row of the table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from bench.core.comparisons import Comparison, Pair, pairs
from bench.core.metrics import Metric
from bench.core.paired import ALPHA, N_RESAMPLES, PairedScores, equivalence, holm, mean_sd, verdict
from bench.core.samples import Rows, compare_rows
from bench.report.model import CellState, Column, Entry, Table, config_key, config_labels, eval_tasks

DELTA_ACC = Metric("delta_accuracy", "Δ Acc", "points", "delta_pp", False)
DELTA_F1 = Metric("delta_weighted_f1", "Δ F1", "", "delta_f1", False)
SamplesFn = Callable[[object, str], Rows | str]


@dataclass(frozen=True)
class PairRow:
    task: str
    pair: Pair
    label_a: str
    label_b: str
    result: PairedScores | None
    why: str = ""  # why there is no result (HTML tooltip)
    status: str = "none"  # the entry status when there is no result
    short: str = ""  # the same in a few words, shown in the table

    def empty(self) -> list[Entry]:
        """The reason in the first numeric column, then dashes."""
        return [
            Entry(self.short, status=self.status, note=self.why),
            Entry("—", status="none", note=self.why),
        ]


def paired_rows(states: list[CellState], comparisons: tuple[Comparison, ...], scorer: str,
                samples: SamplesFn | None) -> list[PairRow]:  # fmt: skip
    """One row per (pair, task both evaluate), in pair order; random-weight cells are never compared."""
    by_key = {st.cell.key: st for st in states}
    labels = config_labels([st.cell for st in states])
    out = []
    for pair in pairs(tuple(st.cell for st in states), comparisons):
        a, b = by_key[pair.a.key], by_key[pair.b.key]
        if a.random or b.random:
            continue
        for task in (t for t in eval_tasks(pair.a) if t in eval_tasks(pair.b)):
            result, why, status, short = _compare(a, b, task, scorer, samples)
            label_a, label_b = labels[config_key(pair.a)], labels[config_key(pair.b)]
            out.append(PairRow(task, pair, label_a, label_b, result, why, status, short))
    return out


def _compare(a: CellState, b: CellState, task: str, scorer: str, samples: SamplesFn | None):
    for st in (a, b):
        status, _ = st.outcome
        if status != "ok":
            return None, f"{st.cell.id}: {st.label}", status, st.label
    if samples is None:
        return None, "no results directory given: per-row samples not read", "none", "no samples"
    rows = [samples(st.eval, task) for st in (a, b)]
    why = next((r for r in rows if isinstance(r, str)), None)
    if why:
        return None, why, "none", "no samples"
    result = compare_rows(task, scorer, rows[0], rows[1])
    if isinstance(result, str):
        return None, result, "none", "rows differ"
    return result, "", "ok", ""


def paired_table(rows: list[PairRow], scorer: str) -> Table:
    tested = [r for r in rows if r.result is not None]
    adjusted = dict(zip(map(id, tested), holm([r.result.mcnemar_p for r in tested]), strict=True))
    spreads = _seed_spreads(tested)
    with_seeds = any(len(v) > 1 for v in spreads.values())
    columns = [Column("Task"), Column("A"), Column("B (reference)"), Column("Pair"), Column("n"),
               Column("Δ Acc", "", DELTA_ACC), Column("Δ F1", "", DELTA_F1), Column("McNemar p"),
               Column("Holm p"), Column("Verdict")]  # fmt: skip
    columns += [Column("Δ Acc over seeds", "", DELTA_ACC)] if with_seeds else []
    body = []
    for r in rows:
        head = [_task_entry(r), Entry(r.label_a), Entry(r.label_b), Entry(r.pair.kind)]
        if r.result is None:
            first, dash = r.empty()
            body.append(tuple(head + [first] + [dash] * (len(columns) - len(head) - 1)))
            continue
        body.append(tuple(head + _numbers(r.result, adjusted[id(r)])
                          + ([_spread_entry(spreads[_group(r)])] if with_seeds else [])))  # fmt: skip
    notes = (
        f"Δ = A − B on the same test rows, {scorer} scorer; accuracy in points, weighted F1 in [0, 1]. "
        f"(lo–hi): 95% paired bootstrap interval ({N_RESAMPLES} resamples of the rows, A and B resampled "
        "together, seed 0).",
        f"McNemar exact two-sided p for accuracy; Holm-corrected across the {len(tested)} tests of this "
        f"table (family-wise error rate). Verdict at the {ALPHA:.0%} level on the Holm p: better / worse / "
        "no significant difference.",
        "Pairs: 'vs base' every adapter against its base row; 'named' the matrix's compare; 'default' each "
        "bits/rank/method configuration against the matrix's first. Seeds are paired seed with seed.",
    ) + (("Δ Acc over seeds: mean ± standard deviation of Δ across the pair's seeds (training noise).",)
         if with_seeds else ())  # fmt: skip
    title = f"Paired differences — {scorer} scorer"
    return Table(f"paired-{scorer}", title, tuple(columns), tuple(body), notes)


def _numbers(result: PairedScores, holm_p: float) -> list[Entry]:
    acc, f1 = result.accuracy, result.weighted_f1
    tip = f"n={result.n}; A right, B wrong on {result.a_only} rows; B right, A wrong on {result.b_only}"
    return [
        Entry(str(result.n), result.n),
        Entry(DELTA_ACC.format(100 * acc.estimate), 100 * acc.estimate, note=tip,
              detail=f"{DELTA_ACC.format(100 * acc.low)}–{DELTA_ACC.format(100 * acc.high)}"),
        Entry(DELTA_F1.format(f1.estimate), f1.estimate,
              detail=f"{DELTA_F1.format(f1.low)}–{DELTA_F1.format(f1.high)}"),
        Entry(_p(result.mcnemar_p), result.mcnemar_p),
        Entry(_p(holm_p), holm_p),
        Entry(verdict(acc.estimate, holm_p), verdict(acc.estimate, holm_p)),
    ]  # fmt: skip


def _task_entry(r: PairRow) -> Entry:
    """The eval task, and the training set where it differs (fpb scored by a 'sentiment' adapter)."""
    via = r.pair.a.task
    return Entry(r.task if via == r.task else f"{r.task} (adapter: {via})", r.task)


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _group(r: PairRow) -> tuple:
    """The pair with seeds left out: its rows over seeds are one configuration pair."""
    return (r.task, r.pair.kind, _seedless(r.label_a), _seedless(r.label_b))


def _seedless(label: str) -> str:
    return label.rsplit(" · seed ", 1)[0]


def _seed_spreads(rows: list[PairRow]) -> dict[tuple, list[float]]:
    out: dict[tuple, list[float]] = {}
    for r in rows:
        out.setdefault(_group(r), []).append(100 * r.result.accuracy.estimate)
    return out


def _spread_entry(deltas: list[float]) -> Entry:
    mean, sd = mean_sd(deltas)
    if sd is None:
        return Entry("—", status="none", note="one seed")
    return Entry(
        f"{mean:+.2f} ± {sd:.2f}",
        mean,
        note=f"{len(deltas)} seeds: " + ", ".join(f"{d:+.1f}" for d in deltas),
    )


ANSWERS = {
    "equivalent": "{a} is equivalent to {b} within ±{m:g} points on {task}",
    "different": "{a} and {b} differ by more than {m:g} points on {task}",
    "cannot tell": "the data cannot tell whether {a} is within ±{m:g} points of {b} on {task}",
}


def equivalence_table(rows: list[PairRow], scorer: str) -> Table | None:
    """TOST for the pairs the matrix asks about with a margin: is the 90% interval inside ±margin?"""
    asked = [r for r in rows if r.pair.margin is not None]
    if not asked:
        return None
    columns = (Column("Task"), Column("A"), Column("B (reference)"), Column("n"),
               Column("Δ Acc", "", DELTA_ACC), Column("90% interval"), Column("Margin"),
               Column("Answer"))  # fmt: skip
    body = []
    for r in asked:
        head = [_task_entry(r), Entry(r.label_a), Entry(r.label_b)]
        margin = Entry(f"±{r.pair.margin:g}", r.pair.margin)
        if r.result is None:
            first, dash = r.empty()
            body.append(tuple(head + [first, dash, dash, margin, dash]))
            continue
        body.append(tuple(head + _equivalence_entries(r, margin)))
    notes = (
        f"Two one-sided tests (TOST) at the 5% level on accuracy ({scorer} scorer): A and B are called "
        "equivalent when the 90% paired bootstrap interval of A − B lies inside ±margin points, and not "
        "equivalent when it lies wholly outside; otherwise the test set is too small to tell.",
    )
    title = f"Equivalence questions — {scorer} scorer"
    return Table(f"equivalence-{scorer}", title, columns, tuple(body), notes)


def _equivalence_entries(r: PairRow, margin: Entry) -> list[Entry]:
    ci = _points(r.result.accuracy_90)
    answer = equivalence(ci, r.pair.margin)
    text = ANSWERS[answer].format(a=r.label_a, b=r.label_b, m=r.pair.margin, task=r.task)
    return [
        Entry(str(r.result.n), r.result.n),
        Entry(DELTA_ACC.format(ci.estimate), ci.estimate),
        Entry(f"{DELTA_ACC.format(ci.low)} to {DELTA_ACC.format(ci.high)}"),
        margin,
        Entry(text, answer),
    ]


def _points(interval):
    return replace(
        interval, estimate=100 * interval.estimate, low=100 * interval.low, high=100 * interval.high
    )
