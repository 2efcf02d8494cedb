import subprocess
import sys

PURE = ["bench.matrix", "bench.runner", "bench.store", "bench.cell", "bench.records", "bench.data",
        "bench.catalog", "bench.report", "bench.render", "bench.planner", "bench.memory"]  # fmt: skip


def test_pure_core_does_not_import_torch():
    code = f"import sys, {', '.join(PURE)}; bad = [m for m in ('torch', 'transformers', 'deepspeed') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"  # noqa: E501
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
