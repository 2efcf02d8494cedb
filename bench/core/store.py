"""Append-only JSONL store of RunRecords (results/records.jsonl).

One line per record, written under an exclusive flock, flushed and fsynced, so a kill at any
moment leaves at most a torn last line, which readers skip with a warning naming file and line. A line
that is JSON but not a record (a list, a number, a record whose scores are not a list of mappings) is
skipped the same way. An append that fails part-way (disk full) truncates the file back to where it
was, so a failed write never leaves a torn line in the middle of the store.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.core.metrics import METRICS
from bench.core.records import RunRecord, Status


class StoreError(Exception):
    pass


class Store:
    def __init__(self, results_dir: Path):
        self.root = Path(results_dir)
        self.path = self.root / "records.jsonl"

    def check_writable(self) -> None:
        """Before anything runs: the folder can take files, records.jsonl is a file, and there is room."""
        check_output_dir(self.root, "results", "pass --results-dir or set BENCH_RESULTS to a writable folder")
        if self.path.exists() and not self.path.is_file():
            raise StoreError(f"{self.path} is not a file; move it away or pass another --results-dir")

    def append(self, record: RunRecord) -> None:
        data = (json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False) + "\n").encode()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fh = open(self.path, "a+b", buffering=0)  # unbuffered: a failed write is seen here
        except OSError as exc:
            raise StoreError(f"cannot open {self.path} to append a record ({exc.strerror})") from exc
        with fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                _append_or_restore(fh, self.path, data)
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def records(self) -> list[RunRecord]:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a record file; move it away or pass another "
                             "--results-dir")  # fmt: skip
        if not self.path.exists():
            return []
        out = []
        try:
            with open(self.path, "rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_SH)
                lines = fh.read().split(b"\n")
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError as exc:
            raise StoreError(f"cannot read {self.path} ({exc.strerror})") from exc
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                out.append(record_from_line(raw))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                print(f"warning: {self.path}:{number}: skipped unreadable record ({exc})", file=sys.stderr)
        return out


MIN_FREE_BYTES = 16 * 2**20  # room for records, logs and outcome files of the next steps


def check_output_dir(folder: Path, what: str, fix: str, min_free: int = MIN_FREE_BYTES) -> None:
    """A folder bench will write into: creatable, a directory, writable, with `min_free` bytes free."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        raise StoreError(f"{what} directory {folder} is not writable ({exc.strerror}); {fix}") from exc
    if free < min_free:
        raise StoreError(
            f"{what} directory {folder} has {free / 2**20:.1f} MiB free, less than the "
            f"{min_free / 2**20:.0f} MiB bench needs to write; free space or {fix}"
        )


# Record fields whose type the report and the gate rely on (a wrong one is a skipped line, not a crash).
FIELD_TYPES = {"cell_key": str, "cell_id": str, "cell": dict, "metrics": dict, "scores": list, "data": list,
               "env": dict, "artifacts": dict, "notes": list, "wall_s": int | float, "started_at": str,
               "finished_at": str, "matrix": str, "error": str | None, "log_tail": str | None}  # fmt: skip
SCORE_TYPES = {"task": str, "scorer": str}


def record_from_line(raw: bytes) -> RunRecord:
    """One store line as a RunRecord; ValueError/TypeError when it is JSON but not a record object."""
    data = json.loads(raw)
    if not isinstance(data, dict):
        raise TypeError(f"{_json_kind(data)}, not a record object")
    for name, kind in FIELD_TYPES.items():
        if name in data and (not isinstance(data[name], kind) or isinstance(data[name], bool)):
            raise TypeError(f"'{name}' is {type(data[name]).__name__}, not {getattr(kind, '__name__', kind)}")
    if not all(isinstance(s, dict) for s in data.get("scores", [])):
        raise TypeError("'scores' must be a list of mappings")
    _check_numbers("metrics", data.get("metrics", {}))
    for score in data.get("scores", []):
        _check_numbers("scores", score)
        for name, kind in SCORE_TYPES.items():
            if not isinstance(score.get(name), kind):
                raise TypeError(f"a score's '{name}' is {type(score.get(name)).__name__}, not a string")
    return RunRecord.from_dict(data)


def _json_kind(value) -> str:
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {list: "a JSON array", str: "a string", int: "a number", float: "a number"}[type(value)]


def _check_numbers(where: str, values: dict) -> None:
    """The registry's metrics (accuracy, train_loss_last, ...) are numbers or null wherever they occur."""
    for name in METRICS.keys() & values.keys():
        value = values[name]
        if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)):
            raise TypeError(f"{where}: '{name}' is {type(value).__name__}, not a number")


def _append_or_restore(fh, path: Path, data: bytes) -> None:
    """Write one line at the end; on any failure cut the file back to its size before, then explain."""
    fh.seek(0, os.SEEK_END)
    start = fh.tell()
    try:
        _terminate_torn_line(fh)
        view = memoryview(data)
        while view:  # a raw write may take part of the line; the rest goes on, or fails
            view = view[os.write(fh.fileno(), view) :]
        os.fsync(fh.fileno())
    except OSError as exc:
        os.ftruncate(fh.fileno(), start)  # drop the part of the line that did get written
        raise StoreError(_append_failure(path, len(data), exc)) from exc


def _append_failure(path: Path, needed: int, exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        free = shutil.disk_usage(path.parent).free
        return (
            f"{path}: no space to append a record ({exc.strerror}): it needs {needed} bytes, "
            f"{free} are free; the file is as it was before this record. Free space (or pass "
            "another --results-dir) and run again: what is recorded is kept and the run resumes"
        )
    return f"{path}: appending a record failed ({exc.strerror}); the file is as it was before this record"


def _terminate_torn_line(fh) -> None:
    """If a killed writer left a partial last line, end it so the next record starts clean."""
    fh.seek(0, os.SEEK_END)
    if fh.tell() == 0:
        return
    fh.seek(-1, os.SEEK_END)
    if fh.read(1) != b"\n":
        fh.write(b"\n")


def latest(records: Iterable[RunRecord]) -> dict[tuple[str, str], RunRecord]:
    """The newest record per (cell key, phase): later lines supersede earlier ones."""
    out: dict[tuple[str, str], RunRecord] = {}
    for record in records:
        out[(record.cell_key, record.phase)] = record
    return out


def is_ok(record: RunRecord | None) -> bool:
    return record is not None and record.status == Status.OK
