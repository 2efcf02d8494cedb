"""`bench run` as one call: check the data, plan (bench.orchestration.scheduler), leave out the cells that
do not fit the visible GPUs, execute locally or on Ray, say what happened, report. The CLI only parses
its arguments into a RunRequest."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.catalog import training_set
from bench.core.data import check_task_data, load_splits
from bench.core.matrix import Matrix, MatrixError
from bench.core.records import RunRecord, Status
from bench.core.store import Store, latest
from bench.orchestration.preemption import PREEMPTED_EXIT, STOP
from bench.orchestration.scheduler import Step, plan
from bench.planning import fit
from bench.planning.fit import SKIPPED, unfit


@dataclass(frozen=True)
class RunRequest:
    matrix: Matrix
    data_dir: Path
    store: Store
    retry: frozenset[Status] = frozenset()
    rerun: bool = False
    force: bool = False  # run cells that do not fit the visible GPUs anyway
    executor: str = "local"  # local | ray
    node_retries: int = 0


def run_matrix(request: RunRequest, report: Callable[[dict[str, str]], None] | None = None) -> int:
    """The exit status: 0 all ok, 1 a step not ok, PREEMPTED_EXIT stopped on request. `report` gets the
    cells left out as too big (none with --force) once the records are written."""
    matrix, store = request.matrix, request.store
    check_data(matrix, request.data_dir)
    store.check_writable()
    steps = plan(matrix.cells, store.records(), request.retry, request.rerun)
    too_big = unfit({s.cell for s in steps}, request.data_dir, fit.visible_gpu_gb())
    for cell in dict.fromkeys(s.cell for s in steps if s.cell.key in too_big):
        verdict = "runs anyway (--force)" if request.force else f"{SKIPPED}; --force runs it anyway"
        print(f"{cell.id}: {too_big[cell.key]}: {verdict}")
    if not request.force:
        steps = [s for s in steps if s.cell.key not in too_big]
    print(
        f"matrix {matrix.name}: {len(matrix.cells)} cells, {len(steps)} steps to run; results in {store.root}"
    )
    written = _execute(request, steps)
    failed = _say_done(written)
    if report is not None:
        report({} if request.force else too_big)
    if "preempted" in failed or _left_on_request(steps, written):
        return PREEMPTED_EXIT  # stopped on request: a scheduler that requeues the job runs it again
    return 1 if failed else 0  # the records and the report are written either way


def _left_on_request(steps: list[Step], written: list[RunRecord]) -> bool:
    """A stop request ended the run with steps it never started. Their running step may have finished
    ok before the request reached it (a short training), so no record says `preempted`, yet the matrix
    is not done: exit 0 would tell a scheduler not to run the job again."""
    ran = latest(written)
    return STOP.requested and any((s.cell.key, s.phase) not in ran for s in steps)


def _execute(request: RunRequest, steps: list[Step]) -> list[RunRecord]:
    from bench.orchestration.launch import Launcher

    store, name = request.store, request.matrix.name
    if request.executor == "ray":
        from bench.orchestration.ray_executor import run_on_ray

        launcher = Launcher(store.root.resolve(), request.data_dir.resolve(), name, echo=False)
        return run_on_ray(launcher, store, steps, request.node_retries)
    from bench.orchestration.console import Console
    from bench.orchestration.runner import run

    refuse_multinode(steps)
    console = Console(len(steps))  # bars on a terminal; lines (and the workers' lines) otherwise
    launcher = Launcher(store.root.resolve(), request.data_dir, name, echo=not console.bars,
                        on_event=console.worker_event)  # fmt: skip
    try:
        return run(steps, store, launcher, console.line, launcher.group, console.record_written)
    finally:
        console.close()


def _say_done(written: list[RunRecord]) -> Counter:
    """Each step's last record of this run: a step lost with its node and rerun (--node-retries) counts as
    its rerun ended. Returns the statuses that were not ok, counted."""
    final = latest(written)
    failed = Counter(str(r.status) for r in final.values() if r.status != Status.OK)
    detail = f" ({', '.join(f'{n} {status}' for status, n in sorted(failed.items()))})" if failed else ""
    retried = f", {len(written) - len(final)} retried" if len(written) > len(final) else ""
    print(f"done: {len(written)} records written, {sum(failed.values())} not ok{detail}{retried}")
    return failed


def check_data(matrix: Matrix, data_dir: Path) -> None:
    """Every task's data is there and parses, line by line, before any model loads."""
    sets = [training_set(c.task) for c in matrix.cells]
    tasks = {t for s in sets for t in s.train_tasks + s.eval_tasks}
    for task in sorted(tasks):
        check_task_data(task, data_dir)
        load_splits(task, data_dir)


def refuse_multinode(steps: list[Step]) -> None:
    spanning = sorted({s.cell.id for s in steps if s.cell.nodes > 1 and s.phase == "train"})
    if spanning:
        raise MatrixError(
            f"{len(spanning)} cells train on more than one node ({spanning[0]}, ...): the local executor "
            "runs on this machine only; use `--executor ray` on a cluster, or drop the 'nodes' axis"
        )
