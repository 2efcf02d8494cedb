"""Old stores keep working: a store written before the subpackage layout (commit 71db6b0) loads, plans
and reports its results, resources and problems as that commit did, apart from the columns added since.
The header, the published comparison and the tables added later may change on purpose (protocols,
like-for-like comparisons, paired statistics): their own tests pin them."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from bench.core.matrix import load
from bench.core.store import Store, latest
from bench.orchestration.runner import cell_status, plan
from bench.report.render import write_reports

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "store_71db6b0"
# Report columns added after 71db6b0 (Markdown headings: label and unit)
ADDED_COLUMNS = ("Truncated rows", "Model FLOPs (per token)", "Achieved (per device)", "MFU (%)",
                 "Predicted train time", "Eval time", "Predicted eval time")
ADDED_CSV = ("truncated_examples", "flops_per_token", "achieved_flops_per_s", "mfu", "predicted_train_s",
             "eval_s", "predicted_eval_s")
SAME_SECTIONS = (
    "Problems and caveats",
    "Results — finlora scorer (primary)",
    "Results — strict scorer",
    "Resources (training and inference cost)",
)


def _without_columns(markdown: str, headings: tuple[str, ...]) -> str:
    """The Markdown with the named table columns removed (and the legend words naming them)."""
    out, drop = [], set()
    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = line.strip("|").split("|")
            if any(c.strip() in headings for c in cells):
                drop = {i for i, c in enumerate(cells) if c.strip() in headings}
            line = "|" + "|".join(c for i, c in enumerate(cells) if i not in drop) + "|"
        else:
            drop = set()
            for heading in headings:  # the legend names columns by label, without the unit
                line = line.replace(f", {heading.split(' (')[0]}", "")
        out.append(line)
    return "\n".join(out) + "\n"


def _sections(markdown: str) -> dict[str, str]:
    """'## Title' -> the text up to the next such heading."""
    parts = markdown.split("\n## ")[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def test_a_store_from_before_the_layout_loads_plans_and_reports_the_same(tmp_path):
    matrix = load(REPO / "matrices" / "smoke.yaml")
    records = Store(FIXTURE).records()
    assert len(records) == 5 and {r.phase for r in records} == {"train", "eval"}
    last = latest(records)
    assert [cell_status(c, last) for c in matrix.cells] == ["done"] * 3  # cell keys unchanged
    assert plan(matrix.cells, records) == []
    md, _, csv = write_reports(matrix.name, matrix.description, list(matrix.cells), records, tmp_path)
    now = md.read_text(encoding="utf-8")
    assert all(f"| {h} |" in now for h in ADDED_COLUMNS)
    before = _sections((FIXTURE / "smoke.md").read_text(encoding="utf-8"))
    after = _sections(_without_columns(now, ADDED_COLUMNS))
    for title in SAME_SECTIONS:
        assert after[title] == before[title], title
    frame = pd.read_csv(csv)
    before = pd.read_csv(io.StringIO((FIXTURE / "smoke.csv").read_text()))
    assert set(ADDED_CSV) <= set(frame.columns)
    pd.testing.assert_frame_equal(frame[list(before.columns)], before)  # the columns it had keep their values
