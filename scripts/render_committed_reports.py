"""Render every committed report again from its committed records with today's code:
reports/<where>/<matrix>.{md,html,csv} from reports/<where>/records/<matrix>/ (matrix.yaml and the
results folder). tests/test_committed_reports.py checks that nothing is left to change.

    python scripts/render_committed_reports.py
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

REPORTS = Path(__file__).resolve().parents[1] / "reports"


def main() -> int:
    found = sorted(REPORTS.glob("*/records/*/matrix.yaml"))
    for matrix in found:
        inputs, folder = matrix.parent, matrix.parents[2]
        cmd = [sys.executable, "-m", "bench", "report", str(matrix), "--results-dir", str(inputs),
               "--reports-dir", str(folder)]  # fmt: skip
        done = subprocess.run(cmd, check=False)
        if done.returncode:
            print(f"failed: {' '.join(cmd)}", file=sys.stderr)
            return done.returncode
        name = yaml.safe_load(matrix.read_text(encoding="utf-8"))["name"]
        if name != inputs.name:  # the report keeps its folder's name (table1-no-checkpointing)
            for ext in ("md", "html", "csv"):
                (folder / f"{name}.{ext}").replace(folder / f"{inputs.name}.{ext}")
    print(f"{len(found)} reports rendered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
