"""The committed results of the speed benchmarks: one JSON line per measured run, appended.

benchmarks/results/speed.jsonl is in git (the numbers the README quotes come from it); the old
benchmarks/results.jsonl stays a git-ignored scratch file. Every line carries the run id of its
benchmark invocation, the side and repetition, its own measurements and the host's facts (CPU model
and the flags that decide the fast precision, threads, torch, GPU, git commit), so that a table can be
rebuilt from the file alone (benchmarks/tables.py) and a line read on its own still says where it ran.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "speed.jsonl"
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def cpu_facts(cpuinfo: str | None = None) -> dict:
    """CPU model and the flags that matter for bf16 / int8 matmuls, from /proc/cpuinfo."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo = ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name") or platform.processor() or None,
        "cpu_flags": [f for f in CPU_FLAGS if f in flags],
        "cpu_count": os.cpu_count(),
    }


def git_commit(repo: Path = HERE.parent) -> str | None:
    def git(*args):
        done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    sha = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return None if sha is None else sha + ("+dirty" if dirty else "")


def host_facts(threads: int) -> dict:
    """Everything about where a run ran that its numbers depend on (torch imported here, lazily)."""
    import torch

    facts = {"host": platform.node(), **cpu_facts(), "torch": torch.__version__, "torch_threads": threads}
    facts["mkldnn_bf16"] = bool(getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)())
    cuda = torch.cuda.is_available()
    facts["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []
    for package in ("transformers", "peft", "bitsandbytes", "deepspeed", "lm_eval"):
        try:
            facts[package] = __import__(package).__version__
        except Exception:  # a missing package is a fact too
            facts[package] = None
    facts["load_avg_1m"] = load_avg()
    facts["git_commit"] = git_commit()
    return facts


def load_avg() -> float | None:
    """The 1-minute load average: other work on a shared machine is part of what a timing means."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def append(record: dict, path: Path = RESULTS) -> None:
    """One line, flushed and fsynced: an interrupted benchmark keeps every run it finished."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(record, ensure_ascii=False) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read(path: Path = RESULTS) -> list[dict]:
    """Every complete line (a torn last line from a killed run is skipped)."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def steady_rate(step_s: list[float], step_units: list[float], warmup: int) -> float | None:
    """Units (real tokens, examples) per second over the steps after the first `warmup` ones."""
    seconds, units = sum(step_s[warmup:]), sum(step_units[warmup:])
    return round(units / seconds, 3) if seconds > 0 else None


def median_interval(values: list[float]) -> dict:
    """Median of the repetitions and their min–max (the interval the tables show; with n <= 5 the
    whole range is the honest spread, a bootstrap of 3 values would only pretend to more)."""
    values = sorted(v for v in values if v is not None)
    if not values:
        return {"n": 0, "median": None, "low": None, "high": None}
    return {
        "n": len(values),
        "median": round(statistics.median(values), 3),
        "low": values[0],
        "high": values[-1],
    }
