"""The layering contract: the pure core imports no ML stack (pyproject's [tool.importlinter]).

import-linter follows every import, function-level ones included, so a lazy `import torch` in a
helper the planner calls fails here as surely as one at the top of a module.
"""

from __future__ import annotations

from pathlib import Path

from importlinter.cli import lint_imports

REPO = Path(__file__).resolve().parents[1]


def test_pure_core_imports_no_ml_stack(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    status = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True)
    out = capsys.readouterr().out
    assert status == 0, out
    assert "2 kept, 0 broken" in out  # ML stack; trackers (mlflow, wandb)


def test_the_contract_would_catch_a_lazy_torch_import(tmp_path, monkeypatch, capsys):
    """The same contract on a copy of the package with one lazy `import torch` in the planner."""
    import shutil
    import sys

    copy = tmp_path / "bench"
    shutil.copytree(REPO / "bench", copy, ignore=shutil.ignore_patterns("__pycache__"))
    planner = copy / "planning" / "planner.py"
    planner.write_text(planner.read_text() + "\n\ndef _sneaky():\n    import torch  # noqa: F401\n")
    config = tmp_path / "pyproject.toml"
    config.write_text((REPO / "pyproject.toml").read_text())
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "bench" or m.startswith("bench.")]:
        monkeypatch.delitem(sys.modules, name)
    assert lint_imports(config_filename=str(config), no_cache=True) == 1
    assert "bench.planning.planner -> torch" in capsys.readouterr().out
