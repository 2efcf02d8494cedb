"""Record assembly: one RunRecord from what a step left behind (its worker's outcome file, the status the
launcher classified, its log), for every executor. The launcher runs processes; this builds records."""

from __future__ import annotations

from pathlib import Path

from bench.core.records import Phase, RunRecord, Status, environment, now
from bench.orchestration.scheduler import Step
from bench.planning.planner import predict
from bench.planning.timing import timed_metrics

LOG_TAIL_LINES = 40


def record_of(
    step: Step, outcome: dict, status: Status, error: str | None, log_path: Path, started: str, wall: float,
    *, results_dir: Path, data_dir: Path, matrix: str, env: dict | None = None, predicted: bool = True,
) -> RunRecord:  # fmt: skip
    """`outcome`: the worker's outcome file as read ({} when it wrote none); `env` replaces this host's
    environment (a record made by the Ray driver for a lost node); `predicted`: the planner's prediction
    goes beside the measurement (its error), except for the gate's speed runs and lost steps."""
    timing = step.phase in (Phase.PLAIN, Phase.SPEED)
    forecast = predicted and not timing
    prediction = predict(step.cell, data_dir) if forecast else None
    return RunRecord(
        cell_key=step.cell.key,
        cell_id=step.cell.id,
        cell=step.cell.to_dict(),
        phase=step.phase,
        status=status,
        started_at=started,
        finished_at=now(),
        wall_s=round(wall, 3),
        matrix=matrix,
        metrics={
            **outcome.get("metrics", {}),
            **(prediction.to_metrics(step.phase) if prediction else {}),
            # the time planner's forecast beside the measurement, calibrated on the store so far
            **(timed_metrics(step, outcome.get("metrics", {}), results_dir, data_dir) if forecast else {}),
        },
        scores=outcome.get("scores", []),
        data=outcome.get("data", []),
        env=env if env is not None else environment(),
        artifacts={
            "log": str(log_path.relative_to(results_dir)),
            **{k: str(Path(v).relative_to(results_dir)) for k, v in outcome.get("artifacts", {}).items()},
        },
        notes=outcome.get("notes", []),
        error=error,
        log_tail=None if status == Status.OK else tail_of(log_path),
    )


def tail_of(path: Path, lines: int = LOG_TAIL_LINES) -> str | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    return "\n".join(text.splitlines()[-lines:])
