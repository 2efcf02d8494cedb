"""MLflow: the matrix is an experiment, each cell one run found by its cell-key tag, the report on a
run of its own. Embedded default: a SQLite store and an artifact folder under <results>/mlflow, which
`mlflow ui --backend-store-uri sqlite:///<results>/mlflow/mlflow.db` opens.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench.core.cell import Cell
from bench.core.records import RunRecord
from bench.core.store import Store, latest
from bench.orchestration.runner import cell_status
from bench.tracking import mapping

# A dead server must not hold a matrix up for minutes of mlflow's default retries; a user's own
# settings of these win.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
RUN_STATUS = {"done": "FINISHED", "failed": "FAILED", "oom": "FAILED", "timeout": "FAILED"}
BATCH = 100  # mlflow's log_batch takes at most 100 params (and 1000 metrics) per call


def embedded_uri(results_dir: Path) -> str:
    return f"sqlite:///{(Path(results_dir) / 'mlflow' / 'mlflow.db').resolve()}"


class MlflowSink:
    def __init__(self, store: Store, matrix: str, uri: str | None):
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self.root, self.matrix = store.root, matrix
        self.uri = uri or embedded_uri(store.root)
        if uri is None:
            (store.root / "mlflow").mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        self.experiment = self._experiment(uri is None)
        self.last = latest(store.records())  # for each cell's status across both its records
        self.runs: dict[str, str] = {}  # cell key -> run id

    def where(self) -> str:
        return f"{self.uri} (experiment {self.matrix!r})"

    def record(self, record: RunRecord) -> bool:
        if record.phase not in mapping.TRACKED_PHASES:
            return False
        self.last[(record.cell_key, record.phase)] = record
        status = cell_status(Cell.from_dict(record.cell), self.last)
        run = self._run(record)
        done = run.data.tags.get(f"{mapping.TAG}{record.phase}_record") == mapping.identity(record)
        if not done:  # this very record is logged already (bench track after a tracked run): no twice
            self._log(run.info.run_id, record)
        self.client.set_tag(run.info.run_id, mapping.TAG + "status", status)
        if status in RUN_STATUS:
            self.client.set_terminated(run.info.run_id, RUN_STATUS[status])
        else:
            self.client.update_run(run.info.run_id, status="RUNNING")
        return not done

    def report(self, paths: list[Path]) -> None:
        found = self.client.search_runs(
            [self.experiment], f"tags.`{mapping.ROLE_TAG}` = 'report'", max_results=1
        )
        run_id = found[0].info.run_id if found else self.client.create_run(
            self.experiment, run_name=f"{self.matrix} report",
            tags={mapping.ROLE_TAG: "report", mapping.TAG + "matrix": self.matrix},
        ).info.run_id  # fmt: skip
        for path in paths:
            self.client.log_artifact(run_id, str(path), "report")
        self.client.set_terminated(run_id, "FINISHED")

    def _experiment(self, embedded: bool) -> str:
        found = self.client.get_experiment_by_name(self.matrix)
        if found is not None:
            return found.experiment_id
        location = (self.root / "mlflow" / "artifacts").resolve().as_uri() if embedded else None
        return self.client.create_experiment(self.matrix, artifact_location=location)

    def _run(self, record: RunRecord):
        """The cell's run: found by its key tag (so a second `bench run` adds none), else created."""
        if record.cell_key in self.runs:
            return self.client.get_run(self.runs[record.cell_key])
        found = self.client.search_runs(
            [self.experiment], f"tags.`{mapping.CELL_KEY_TAG}` = '{record.cell_key}'", max_results=1
        )
        run = found[0] if found else self.client.create_run(
            self.experiment, run_name=record.cell_id, tags={mapping.CELL_KEY_TAG: record.cell_key}
        )  # fmt: skip
        self.runs[record.cell_key] = run.info.run_id
        return run

    def _log(self, run_id: str, record: RunRecord) -> None:
        from mlflow.entities import Metric, Param, RunTag

        stamp = int(time.time() * 1000)
        values = [Metric(k, v, stamp, 0) for k, v in mapping.metrics(record).items()]
        values += [Metric(mapping.LOSS, loss, stamp, step) for step, loss in mapping.loss_curve(record)]
        params = [Param(k, v) for k, v in mapping.params(record.cell).items()]
        existing = self.client.get_run(run_id).data.params
        params = [p for p in params if p.key not in existing]  # params are write-once in mlflow
        for i in range(0, max(len(values), len(params)), BATCH):
            self.client.log_batch(run_id, metrics=values[i : i + BATCH], params=params[i : i + BATCH])
        for artifact in mapping.artifacts(record, self.root):
            if artifact.path.is_dir():
                self.client.log_artifacts(run_id, str(artifact.path), artifact.folder)
            else:
                self.client.log_artifact(run_id, str(artifact.path), artifact.folder)
        # Last: the record counts as logged only once everything above went through.
        tags = [RunTag(k, v) for k, v in mapping.tags(record, "").items() if k != mapping.TAG + "status"]
        self.client.log_batch(run_id, tags=tags)
