"""Render a Report as Markdown, HTML (inline CSS and SVG plots) and a flat CSV.

Jinja2 with StrictUndefined, so a template that names a missing field fails loudly, and autoescape
for HTML. Both templates read the same Table objects; all numbers arrive already formatted.
Pure (no torch).
"""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from bench.core.cell import Cell
from bench.core.comparisons import Comparison
from bench.core.records import RunRecord
from bench.core.samples import SampleReader
from bench.report.build import Report, ReportError, build_report
from bench.report.plots import loss_svg, tradeoff_svgs
from bench.report.published import load_published

__all__ = ["ReportError", "render_html", "render_markdown", "write_reports"]

# Entry statuses that mean "no number here, and this is why": shown as badges / in italics.
BADGES = {
    "oom": "OOM",
    "failed": "failed",
    "timeout": "timeout",
    "preempted": "preempted",
    "not_run": "not run",
    "random": "random weights",
}


def md_escape(text) -> str:
    """Keep a value inside one Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("bench.report", "templates"),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html.j2",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_escape
    env.globals["badges"] = BADGES
    return env


def render_markdown(report: Report) -> str:
    return environment().get_template("report.md.j2").render(report=report)


def render_html(report: Report) -> str:
    # The SVGs come from matplotlib, which escapes the text it writes; Markup keeps them unescaped.
    plots = [(title, Markup(svg)) for title, svg in tradeoff_svgs(report.long, report.scorer)]
    loss = loss_svg(report.curves)
    if loss is not None:
        plots.append(("Training loss per cell (from loss_curve)", Markup(loss)))
    return environment().get_template("report.html.j2").render(report=report, plots=plots)


REPORT_EXTENSIONS = ("md", "html", "csv")


def report_paths(out_dir: Path, matrix_name: str) -> tuple[Path, ...]:
    return tuple(Path(out_dir) / f"{matrix_name}.{ext}" for ext in REPORT_EXTENSIONS)


def write_reports(
    matrix_name: str,
    description: str,
    cells: list[Cell],
    records: list[RunRecord],
    out_dir: Path,
    skipped: dict[str, str] | None = None,
    deviations: tuple[str, ...] = (),
    comparisons: tuple[Comparison, ...] = (),
    results_dir: Path | None = None,
    tracking: str | None = None,
) -> list[Path]:
    """Write out_dir/<matrix>.md, .html and .csv; ReportError when the matrix has no records at all.
    results_dir: where the records' samples files are, for the paired comparisons."""
    samples = SampleReader(results_dir) if results_dir is not None else None
    report = build_report(
        matrix_name, description, cells, records, load_published(),
        skipped=skipped, deviations=deviations, comparisons=comparisons, samples=samples, tracking=tracking,
    )  # fmt: skip
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md, html, csv = report_paths(out_dir, matrix_name)
    md.write_text(render_markdown(report), encoding="utf-8")
    html.write_text(render_html(report), encoding="utf-8")
    report.frame().to_csv(csv, index=False, lineterminator="\n")
    return [md, html, csv]
