"""The cache of models bench builds itself (tiny, random weights, packaged wheels): built once per
machine, under a file lock so that parallel worker ranks never race, into a temporary folder that is
renamed into place only when complete (a killed build leaves no half model behind)."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "BENCH_CACHE"


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bench").expanduser()


def build_once(name: str, build: Callable[[Path], object]) -> Path:
    """cache_dir()/models/<name>, calling build(folder) the first time; other callers wait for it."""
    target = cache_dir() / "models" / name
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").exists():
            tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
            try:
                build(tmp)
                os.rename(tmp, target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target
