"""Weights & Biases: the matrix is a project, each cell one run whose id comes from its cell key.

Offline by default (run files under <results>/wandb, `wandb sync <results>/wandb/wandb/offline-run-*`
uploads them later); WANDB_MODE=online (with the user's own login) logs straight to the server.
Each record is one resumed piece of the cell's run (same id), which `wandb sync` joins. An offline run
cannot be asked what it holds, so a ledger file beside the runs says which records are logged.
W&B holds what MLflow holds, except: params are its run config (nested as in the cell), the run's
status is a tag and the summary, not a run state, and the report files are an artifact of a run of
their own.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from bench.core.cell import Cell
from bench.core.records import RunRecord
from bench.core.store import Store, latest
from bench.orchestration.runner import cell_status
from bench.tracking import mapping

LEDGER = "bench-logged.json"  # "<cell key>/<phase>" -> the record's identity (mapping.identity)


class WandbSink:
    def __init__(self, store: Store, matrix: str):
        import wandb

        self.wandb, self.root, self.matrix = wandb, store.root, matrix
        self.dir = store.root / "wandb"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.mode = os.environ.get("WANDB_MODE", "offline")
        self.ledger_path = self.dir / LEDGER
        self.ledger = json.loads(self.ledger_path.read_text()) if self.ledger_path.is_file() else {}
        self.last = latest(store.records())

    def where(self) -> str:
        return f"{self.dir} ({self.mode}; `wandb sync {self.dir}/wandb/offline-run-*` uploads)"

    def record(self, record: RunRecord) -> bool:
        if record.phase not in mapping.TRACKED_PHASES:
            return False
        self.last[(record.cell_key, record.phase)] = record
        status = cell_status(Cell.from_dict(record.cell), self.last)
        entry = f"{record.cell_key}/{record.phase}"
        if self.ledger.get(entry) == mapping.identity(record):
            return False
        run = self.wandb.init(
            project=self.matrix, id=f"cell-{record.cell_key}", name=record.cell_id, group=self.matrix,
            dir=str(self.dir), mode=self.mode, resume="allow", config=record.cell,
            tags=[f"status:{status}", f"phase:{record.phase}"],
        )  # fmt: skip
        try:
            self._log(run, record, status)
        finally:
            run.finish()
        self.ledger[entry] = mapping.identity(record)
        self.ledger_path.write_text(json.dumps(self.ledger, indent=1, sort_keys=True))
        return True

    def report(self, paths: list[Path]) -> None:
        run = self.wandb.init(
            project=self.matrix, id="report", name=f"{self.matrix} report", dir=str(self.dir),
            mode=self.mode, resume="allow", job_type="report",
        )  # fmt: skip
        try:
            artifact = self.wandb.Artifact(f"{self.matrix}-report", type="report")
            for path in paths:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
        finally:
            run.finish()

    def _log(self, run, record: RunRecord, status: str) -> None:
        if record.phase == "train":
            run.define_metric(mapping.LOSS, step_metric="train/step")
            for step, loss in mapping.loss_curve(record):
                run.log({"train/step": step, mapping.LOSS: loss})
        run.summary.update({**mapping.metrics(record), **mapping.tags(record, status)})
        for artifact in mapping.artifacts(record, self.root):
            name = f"{artifact.folder}-{record.cell_key}-{record.phase}"
            logged = self.wandb.Artifact(
                name, type="model" if artifact.folder == "adapter" else artifact.folder
            )
            if artifact.path.is_dir():
                logged.add_dir(str(artifact.path))
            else:
                logged.add_file(str(artifact.path))
            run.log_artifact(logged)
