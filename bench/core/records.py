"""RunRecord: one (cell, phase) outcome as appended to the store, plus environment capture.

Pure (no torch): device facts come from the workers' outcome files.
"""

from __future__ import annotations

import datetime as dt
import functools
import platform
import socket
import subprocess
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from importlib import metadata
from pathlib import Path

SCHEMA = 1
PACKAGES = (
    "torch", "transformers", "peft", "bitsandbytes", "deepspeed", "datasets", "lm_eval",
    "scikit-learn", "pandas", "jinja2", "nvidia-ml-py", "accelerate",
)  # fmt: skip


class Status(StrEnum):
    OK = "ok"
    OOM = "oom"
    FAILED = "failed"
    TIMEOUT = "timeout"
    # Stopped on request (SIGTERM, Ctrl-C) after writing a checkpoint: not a result; the next run resumes it.
    PREEMPTED = "preempted"


class Phase(StrEnum):
    """What a record is the outcome of: a cell's training, its evaluation, or one repetition of the
    gate's speed comparison (`bench check --run`): bench's training worker timed on the cell's settings
    (speed: no adapter that anything evaluates) or the plain-script baseline of them (plain)."""

    TRAIN = "train"
    EVAL = "eval"
    PLAIN = "plain"
    SPEED = "speed"


@dataclass(frozen=True)
class RunRecord:
    cell_key: str
    cell_id: str
    cell: dict
    phase: Phase
    status: Status
    started_at: str
    finished_at: str
    wall_s: float
    matrix: str = ""
    metrics: dict = field(default_factory=dict)  # train: timings, memory, loss; eval: timings
    scores: list = field(default_factory=list)  # eval: one dict per (task, scorer)
    data: list = field(default_factory=list)  # split provenance per task (local split or not)
    env: dict = field(default_factory=dict)
    artifacts: dict = field(default_factory=dict)  # paths relative to the results directory
    notes: list = field(default_factory=list)
    error: str | None = None
    log_tail: str | None = None
    schema: int = SCHEMA

    def to_dict(self) -> dict:
        out = asdict(self)
        out["status"], out["phase"] = str(self.status), str(self.phase)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RunRecord:
        known = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in known}
        values["status"], values["phase"] = Status(values["status"]), Phase(values["phase"])
        return cls(**values)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=cwd, capture_output=True, text=True)
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def environment() -> dict:
    """Facts about the machine that wrote a record. Never environment variables: they hold secrets."""
    return dict(_environment())


@functools.cache  # once per process: package versions and two git subprocesses per record add up
def _environment() -> dict:
    return {
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
        "git_sha": git_sha(Path(__file__).resolve().parent),
    }
