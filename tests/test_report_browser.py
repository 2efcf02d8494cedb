"""The HTML report in a real browser: headless Chromium loads it, the DOM holds the tables and plots.

Marked `browser`; skipped when no Chromium binary is installed (Debian: apt-get install chromium).
Leaves a screenshot at /tmp/report_screenshot.png (or $REPORT_SCREENSHOT) to look at.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_report import MATRIX, smoke_inputs  # tests/ is on sys.path under pytest's default import mode

from bench.report.render import write_reports

pytestmark = pytest.mark.browser
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
)  # fmt: skip


def chromium() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(
            f"no Chromium binary on PATH (looked for {', '.join(BROWSERS)}); apt-get install chromium"
        )
    return found


def run_browser(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [binary, *FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    cells, records = smoke_inputs()
    out = tmp_path_factory.mktemp("report")
    description = "Hand-written records: ok, failed, OOM, timeout, not-run, random-weight and CPU cells"
    return next(p for p in write_reports(MATRIX, description, cells, records, out) if p.suffix == ".html")


def test_dom_holds_tables_and_plots(page, tmp_path):
    done = run_browser(chromium(), tmp_path / "profile", "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    for key in (
        "results-finlora",
        "results-strict",
        "paired-finlora",
        "resources",
        "compare-scores",
        "compare-memory",
    ):
        assert f'id="{key}"' in dom
    assert dom.count("<table") == 6
    assert dom.count("<svg") == 5 and "Pareto" in dom
    assert 'class="badge b-oom"' in dom and "random weights" in dom


def test_screenshot(page, tmp_path):
    shot = Path(os.environ.get("REPORT_SCREENSHOT", "/tmp/report_screenshot.png"))
    done = run_browser(
        chromium(), tmp_path / "profile", f"--screenshot={shot}", "--window-size=1400,2000", page.as_uri()
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.stat().st_size > 50_000  # a blank page is a few kB
