"""Task data: `{context, target}` JSONL files in a data directory, and seeded local splits.

Pure (no torch). Where a task lacks a train or a test file, a deterministic local split is made
from the file that exists, grouped by input text so that the nine questions about one headline
(or every row about one sentence) land on the same side. Such splits are marked, because their
numbers are not comparable with the paper's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from bench.core.catalog import TASKS

DATA_ENV = "BENCH_DATA"
LOCAL_TEST_FRACTION = 0.3
LOCAL_SPLIT_SALT = "bench-local-split-v1"


class DataError(Exception):
    pass


@dataclass(frozen=True)
class SplitInfo:
    task: str
    train_file: str | None
    test_file: str | None
    train_rows: int
    test_rows: int
    local_split: bool
    note: str
    sha256: dict  # file name -> sha256 of its bytes

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Splits:
    train: list[dict]
    test: list[dict]
    info: SplitInfo


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    raw = flag or os.environ.get(DATA_ENV)
    if not raw:
        raise DataError(
            f"no data directory: pass --data-dir or set {DATA_ENV} to the folder that holds "
            "fpb/, ner/, ... (a copy of the FinLoRA data; see README 'Data')"
        )
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"data directory {path} is a file, not a folder (from --data-dir or {DATA_ENV}); "
                        "point it at the folder that holds fpb/, ner/, ...")  # fmt: skip
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist (from --data-dir or {DATA_ENV})")
    return path


def load_rows(path: Path) -> list[dict]:
    rows = []
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove that line") from exc
        rows.append(_checked_row(path, number, row))
    return rows


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines as UTF-8 text; a byte that is not UTF-8 is an error naming its line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); "
                        "re-save the file as UTF-8") from exc  # fmt: skip
    return list(enumerate(text.split("\n"), start=1))


def _checked_row(path: Path, number: int, row) -> dict:
    """A row is an object with string 'context' and 'target' (a null or a number is not a label)."""
    if not isinstance(row, dict) or not isinstance(row.get("context"), str) or "target" not in row:
        raise DataError(f"{path}:{number}: a row needs string 'context' and 'target' keys")
    if not isinstance(row["target"], str) or not row["target"].strip():
        raise DataError(f"{path}:{number}: 'target' is {json.dumps(row['target'])}; it must be a non-empty "
                        "string (the answer's text), e.g. \"positive\"")  # fmt: skip
    return {"context": row["context"], "target": row["target"]}


def group_key(context: str) -> str:
    """The input a row asks about: rows sharing it must not straddle train and test."""
    marker = context.rfind("\nInput:")
    text = context[marker:] if marker >= 0 else context
    return text.split("\nAnswer:")[0].strip()


def in_local_test(context: str) -> bool:
    digest = hashlib.sha256((LOCAL_SPLIT_SALT + group_key(context)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < LOCAL_TEST_FRACTION


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for path in (folder / n for n in names):
        if path.exists() and not path.is_file():  # a folder named test.jsonl is no reason for a local split
            raise DataError(f"{path} is not a file; remove it or put the task's rows there as JSONL")
        if path.is_file():
            return path
    return None


def task_files(task: str, data_dir: Path) -> tuple[Path | None, Path | None]:
    spec = TASKS[task]
    folder = data_dir / spec.folder
    return _first_existing(folder, spec.train_files), _first_existing(folder, spec.test_files)


def check_task_data(task: str, data_dir: Path) -> None:
    """Fail before any model loads if a task has nothing to read."""
    train, test = task_files(task, data_dir)
    if train is None and test is None:
        spec = TASKS[task]
        raise DataError(
            f"task {task!r}: no data in {data_dir / spec.folder} (looked for "
            f"{', '.join(spec.train_files + spec.test_files)}); "
            f"point --data-dir/{DATA_ENV} at the FinLoRA data"
        )


def load_splits(task: str, data_dir: Path) -> Splits:
    """A task's train and test rows. Read and hashed once per process while the files stay unchanged
    (a run asks for the same task from the CLI's check, the planner and the report)."""
    if task not in TASKS:
        raise DataError(f"unknown task {task!r}; known: {', '.join(TASKS)}")
    check_task_data(task, data_dir)
    files = tuple(p for p in task_files(task, data_dir))
    stamps = tuple(None if p is None else (p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _load_splits(task, files, stamps)


@lru_cache(maxsize=64)
def _load_splits(task: str, files: tuple[Path | None, Path | None], stamps: tuple) -> Splits:
    train_path, test_path = files
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p is not None}
    if train_path is not None and test_path is not None:
        train, test = load_rows(train_path), load_rows(test_path)
        note = "published splits"
        local = False
    else:
        source = train_path or test_path
        rows = load_rows(source)
        test = [r for r in rows if in_local_test(r["context"])]
        train = [r for r in rows if not in_local_test(r["context"])]
        local = True
        note = (
            f"local split of {source.parent.name}/{source.name} ({1 - LOCAL_TEST_FRACTION:.0%} train / "
            f"{LOCAL_TEST_FRACTION:.0%} test by input hash): not comparable with the paper"
        )
    if not test:
        raise DataError(f"task {task!r}: the test split is empty ({test_path or train_path})")
    info = SplitInfo(
        task=task,
        train_file=str(train_path) if train_path else None,
        test_file=str(test_path) if test_path else None,
        train_rows=len(train),
        test_rows=len(test),
        local_split=local,
        note=note,
        sha256=sums,
    )
    return Splits(train=train, test=test, info=info)
