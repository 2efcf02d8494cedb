"""Every committed report is what today's `bench report` renders from its committed records, byte for
byte (Markdown, HTML, CSV), so a report can never go stale: change the report code and this fails
until the reports are rendered again (`python scripts/render_committed_reports.py`).

A report folder reports/<where>/ keeps each report's inputs in records/<matrix>/: matrix.yaml (the
matrix as it ran) and the results folder `bench run` wrote (records.jsonl and the samples files its
eval records name; never the adapters). A report whose records were not kept must be named, with the
reason, under "Records not kept" in its folder's README.md: it is then shown as stale, never as current.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
REPORTS = REPO / "reports"
EXTENSIONS = ("md", "html", "csv")


def bench_reports() -> list[Path]:
    """The Markdown files under reports/ that `bench report` wrote (their first line says so)."""
    return sorted(
        p for p in REPORTS.rglob("*.md")
        if "records" not in p.parts
        and p.read_text(encoding="utf-8").split("\n", 1)[0].endswith(": FinLoRA benchmark report")
    )  # fmt: skip


def records_dir(report: Path) -> Path:
    return report.parent / "records" / report.stem


def not_kept(folder: Path) -> set[str]:
    """Report names listed under the README's "Records not kept" heading (lines "- `name`: why")."""
    readme = folder / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    section = text.split("## Records not kept", 1)[1] if "## Records not kept" in text else ""
    section = section.split("\n## ", 1)[0]
    return {line.split("`")[1] for line in section.splitlines() if line.startswith("- `")}


def render(report: Path, out: Path) -> subprocess.CompletedProcess:
    """`bench report` on the report's committed matrix and records, into `out`."""
    inputs = records_dir(report)
    return subprocess.run(
        [sys.executable, "-m", "bench", "report", str(inputs / "matrix.yaml"), "--results-dir", str(inputs),
         "--reports-dir", str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize("report", [p for p in bench_reports() if records_dir(p).exists()], ids=str)
def test_a_committed_report_is_what_bench_report_renders_from_its_records(report, tmp_path):
    done = render(report, tmp_path)
    assert done.returncode == 0, done.stderr
    name = yaml.safe_load((records_dir(report) / "matrix.yaml").read_text(encoding="utf-8"))["name"]
    for ext in EXTENSIONS:
        committed, fresh = report.with_suffix(f".{ext}"), tmp_path / f"{name}.{ext}"
        assert fresh.read_bytes() == committed.read_bytes(), (
            f"{committed.relative_to(REPO)} differs from what `bench report` renders from "
            f"{records_dir(report).relative_to(REPO)}: run python scripts/render_committed_reports.py"
        )


def test_every_committed_report_has_its_records_or_says_why_not():
    missing = [p for p in bench_reports() if not records_dir(p).exists() and p.stem not in not_kept(p.parent)]
    why = "reports without records/<matrix>/ and not listed under 'Records not kept' in their README"
    assert not missing, f"{why}: {missing}"
    for folder in {p.parent for p in bench_reports()}:
        stale = not_kept(folder) - {p.stem for p in bench_reports() if p.parent == folder}
        assert not stale, f"{folder / 'README.md'} lists reports that are not there: {stale}"
