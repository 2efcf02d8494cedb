"""The CLI's tracking pieces: which tracker a `bench run` uses, and `bench track` (log the store's
records afterwards: a run without tracking, an air-gapped cluster, or a tracker that failed mid-run)."""

from __future__ import annotations

from pathlib import Path

from bench.core.matrix import Matrix, MatrixError
from bench.core.records import RunRecord
from bench.core.store import Store, latest
from bench.core.tracking_spec import TrackingSpec, TrackingSpecError, parse_option
from bench.tracking import GuardedSink
from bench.tracking.mapping import TRACKED_PHASES


def spec_for(option: str | None, matrix: Matrix) -> TrackingSpec | None:
    """`--track backend[=URI]` over the matrix's `tracking:`; None: no tracking."""
    if option is None:
        return matrix.tracking
    try:
        return parse_option(option)
    except TrackingSpecError as exc:
        raise MatrixError(f"--track {option!r}: {exc}") from exc


def tracker_for(option: str | None, matrix: Matrix, store: Store) -> GuardedSink | None:
    spec = spec_for(option, matrix)
    return None if spec is None else GuardedSink(spec, store, str(matrix.path), matrix.name)


def track(matrix: Matrix, store: Store, option: str | None, reports_dir: Path) -> int:
    """Log the newest train and eval record of every cell of the matrix, then the report files if
    they exist. Records already logged are recognised and left as they are. Exit 1 if tracking failed."""
    tracker = tracker_for(option, matrix, store)
    if tracker is None:
        raise MatrixError(
            f"{matrix.path}: no `tracking:` in the matrix; pass --to mlflow[=URI] or --to wandb"
        )
    records = log_store(tracker, matrix, store)
    reports = [
        p for p in (reports_dir / f"{matrix.name}.{ext}" for ext in ("md", "html", "csv")) if p.is_file()
    ]
    if reports and not tracker.failure:
        tracker.report(reports)
    print(tracker.summary() + f" ({len(records)} records of {len(matrix.cells)} cells in the store)")
    return 1 if tracker.failure else 0


def log_store(tracker: GuardedSink, matrix: Matrix, store: Store) -> list[RunRecord]:
    """Hand the tracker the newest train and eval record of every cell; those it holds already it
    skips. After a run, this logs what an earlier, interrupted or untracked run left unlogged."""
    records = _records_of(matrix, store.records())
    for record in records:
        tracker.record(record)
    return records


def _records_of(matrix: Matrix, records: list[RunRecord]) -> list[RunRecord]:
    keys = {c.key for c in matrix.cells}
    newest = latest(r for r in records if r.cell_key in keys and r.phase in TRACKED_PHASES)
    return sorted(newest.values(), key=lambda r: (r.finished_at, r.phase != "train"))
