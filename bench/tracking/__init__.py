"""Experiment tracking: a sink beside the store that logs each record as it is appended (MLflow, W&B).

It never decides what is recorded: the store is written first, then the sink sees the record; any
failure of the sink is caught, said once on the console and in the report, and from then on the run
goes on untracked (`bench track MATRIX` logs the rest later). mlflow and wandb are optional
(`pip install 'bench[track]'`) and imported only when a backend is opened.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from bench.core.records import RunRecord
from bench.core.store import Store
from bench.core.tracking_spec import TrackingSpec
from bench.tracking.mapping import identity


class Sink(Protocol):
    def record(self, record: RunRecord) -> bool: ...  # False: the tracker holds this record already

    def report(self, paths: list[Path]) -> None: ...

    def where(self) -> str: ...


def open_sink(spec: TrackingSpec, store: Store, matrix: str) -> Sink:
    """The backend's sink; imports mlflow or wandb (ImportError when the extra is not installed)."""
    if spec.backend == "mlflow":
        from bench.tracking.mlflow_sink import MlflowSink

        return MlflowSink(store, matrix, spec.uri)
    from bench.tracking.wandb_sink import WandbSink

    return WandbSink(store, matrix)


class GuardedSink:
    """Opens the backend on first use and swallows its failures: after one, it stops trying (a dead
    server would otherwise cost its timeout on every record) and `failure` says what and how to catch up."""

    def __init__(self, spec: TrackingSpec, store: Store, matrix_path: str, matrix: str, say=print):
        self.spec, self.store, self.matrix, self.say = spec, store, matrix, say
        self.catch_up = f"bench track {matrix_path} --to {spec.describe()} --results-dir {store.root}"
        self.sink: Sink | None = None
        self.failure: str | None = None
        self.logged = self.already = 0
        self.seen: set[tuple[str, str, str]] = set()

    def record(self, record: RunRecord) -> None:
        mark = (record.cell_key, str(record.phase), identity(record))
        if mark in self.seen:  # handed over already in this process (bench run's closing catch-up)
            return
        self.seen.add(mark)
        outcome = []
        if self._call(lambda sink: outcome.append(sink.record(record))):
            self.logged += outcome[0]
            self.already += not outcome[0]

    def report(self, paths: list[Path]) -> None:
        self._call(lambda sink: sink.report(paths))

    def summary(self) -> str:
        if self.failure:
            return f"tracking ({self.spec.backend}) failed: {self.failure}; catch up with `{self.catch_up}`"
        where = self.sink.where() if self.sink else self.spec.describe()
        already = f" ({self.already} were there already)" if self.already else ""
        return f"tracking ({self.spec.backend}): {self.logged} records logged to {where}{already}"

    def _call(self, action: Callable[[Sink], None]) -> bool:
        if self.failure:
            return False
        try:
            if self.sink is None:
                self.sink = open_sink(self.spec, self.store, self.matrix)
            action(self.sink)
            return True
        except ImportError as exc:
            self._fail(f"{exc.name or exc} is not installed (pip install 'bench[track]')")
        except Exception as exc:  # noqa: BLE001 - any tracker failure: the records are what matter
            self._fail(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        return False

    def _fail(self, text: str) -> None:
        self.failure = text
        print(f"warning: {self.summary()}; every record is still in {self.store.path}", file=sys.stderr)


class TrackedStore(Store):
    """The store, and after each append the sink: the one hook the run loops need."""

    def __init__(self, store: Store, sink: GuardedSink):
        super().__init__(store.root)
        self.sink = sink

    def append(self, record: RunRecord) -> None:
        super().append(record)
        self.sink.record(record)
