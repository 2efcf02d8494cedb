"""Append-only JSONL store of RunRecords (results/records.jsonl).

One line per record, written under an exclusive flock, flushed and fsynced, so a kill at any
moment leaves at most a torn last line, which readers skip with a warning naming file and line.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from bench.core.records import RunRecord, Status


class StoreError(Exception):
    pass


class Store:
    def __init__(self, results_dir: Path):
        self.root = Path(results_dir)
        self.path = self.root / "records.jsonl"

    def check_writable(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-probe-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"results directory {self.root} is not writable ({exc.strerror}); "
                "pass --results-dir or set BENCH_RESULTS to a writable folder"
            ) from exc

    def append(self, record: RunRecord) -> None:
        line = json.dumps(record.to_dict(), sort_keys=True, ensure_ascii=False) + "\n"
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                _terminate_torn_line(fh)
                fh.write(line.encode())
                fh.flush()
                os.fsync(fh.fileno())
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def records(self) -> list[RunRecord]:
        if not self.path.exists():
            return []
        out = []
        with open(self.path, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_SH)
            lines = fh.read().split(b"\n")
            fcntl.flock(fh, fcntl.LOCK_UN)
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                out.append(RunRecord.from_dict(json.loads(raw)))
            except (ValueError, KeyError, TypeError) as exc:
                print(f"warning: {self.path}:{number}: skipped unreadable record ({exc})", file=sys.stderr)
        return out


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
