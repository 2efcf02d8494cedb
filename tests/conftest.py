"""Shared fixtures: the real FinLoRA data directory, a private model cache, small records."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
FILE_SECONDS = Path(__file__).with_name("file_seconds.json")


def pytest_collection_modifyitems(config, items) -> None:
    """Longest test files first. tox runs the suite on two xdist workers a file at a time
    (`--dist loadfile --no-loadscope-reorder`, so files go out in this order): xdist's own reorder
    sends files with many tests first, which left the few-test, minutes-long end-to-end files
    (reliability, tracking, Ray) for last, one worker idle while the other ran them (the suite took
    1,647 s for ~2,900 s of work). The measured seconds per file are tests/file_seconds.json; a file
    not in it counts as short. The sort is stable: each file's tests keep their order."""
    seconds = json.loads(FILE_SECONDS.read_text())["seconds"]
    items.sort(key=lambda item: -seconds.get(item.nodeid.split("::")[0], 0))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA") or DEFAULT_DATA)
    if not (path / "fpb" / "test.jsonl").is_file():
        pytest.skip(f"FinLoRA data not found at {path}; set BENCH_DATA to the data folder")
    return path.resolve()


@pytest.fixture(scope="session")
def bench_cache(tmp_path_factory) -> Path:
    """One tiny-model cache for the whole session, outside the user's ~/.cache."""
    path = Path(os.environ.get("BENCH_TEST_CACHE") or tmp_path_factory.mktemp("bench-cache"))
    os.environ["BENCH_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny_dir(data_dir, bench_cache) -> Path:
    from bench.models.tiny import tiny_model_dir

    return tiny_model_dir(data_dir)


@pytest.fixture
def tiny_data(tmp_path, data_dir):
    """A small copy of the FPB files (20 rows each), to break line by line."""
    folder = tmp_path / "data" / "fpb"
    folder.mkdir(parents=True)
    for name in ("train.jsonl", "test.jsonl"):
        lines = (data_dir / "fpb" / name).read_text().splitlines(keepends=True)[:20]
        (folder / name).write_text("".join(lines))
    return tmp_path / "data"
