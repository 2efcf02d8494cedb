"""bench CLI: plan | run | report | check | track | export | tasks | data (one function each).

Bad input exits with status 2 and one message naming the file, key and fix: no traceback. `run` exits
with status 1 when any step it ran ended failed, oom or timeout (after the whole matrix and its report).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from pathlib import Path

from bench.core.data import DataError, load_splits, resolve_data_dir
from bench.core.matrix import Matrix, MatrixError, load
from bench.core.records import Status
from bench.core.store import Store, StoreError, latest
from bench.core.tasks import TaskError
from bench.gate.speed import MORE_ROUNDS, WARMUP_STEPS
from bench.gate.speed_run import REPETITIONS, STEPS
from bench.orchestration.cluster import ClusterError
from bench.orchestration.runner import BusyError, cell_status, plan
from bench.planning import fit
from bench.planning.fit import SKIPPED, unfit
from bench.planning.planner import PlanError
from bench.tracking import TrackedStore
from bench.tracking.commands import log_store, tracker_for

RESULTS_ENV = "BENCH_RESULTS"
USER_ERRORS = (MatrixError, DataError, StoreError, BusyError, ClusterError, TaskError, PlanError)


def load_matrix(args) -> Matrix:
    """The matrix with the command line's --set overrides and --tasks-dir folders."""
    return load(args.matrix, parse_sets(args.set or []), tuple(Path(d) for d in args.tasks_dir or []))


def parse_sets(items: list[str]) -> dict:
    """--set train.lr=2e-4 -> {"train.lr": "2e-4"} (values read as YAML: numbers, lists, booleans)."""
    import yaml

    out = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name.strip():
            raise MatrixError(f"--set {item!r}: write NAME=VALUE, e.g. --set train.lr=2e-4")
        try:
            out[name.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise MatrixError(f"--set {item!r}: the value is not valid YAML ({problem})") from exc
    return out


def results_dir(args) -> Path:
    return Path(args.results_dir or os.environ.get(RESULTS_ENV) or "results")


def select(matrix: Matrix, pattern: str | None) -> Matrix:
    """--only REGEX: the cells whose id matches, e.g. '4bit-r4' or 'ner__'."""
    if not pattern:
        return matrix
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise MatrixError(f"--only {pattern!r} is not a valid regular expression ({exc})") from exc
    cells = tuple(c for c in matrix.cells if regex.search(c.id))
    if not cells:
        raise MatrixError(
            f"--only {pattern!r} matches no cell of {matrix.path}; see `bench plan {matrix.path}`"
        )
    return dataclasses.replace(matrix, cells=cells)


def cmd_plan(args) -> int:
    from bench.planning import time_plan
    from bench.planning.planner import predict
    from bench.planning.recipes import recipe_lines

    matrix = select(load_matrix(args), args.only)
    records = Store(results_dir(args)).records()
    last = latest(records)
    data_dir = _optional_data_dir(args)
    too_big = unfit(matrix.cells, data_dir, fit.visible_gpu_gb())  # first: it refuses a cell it cannot size
    target = time_plan.plan_target(args.device)
    times = time_plan.predictions(matrix.cells, data_dir, records, target)
    print(f"matrix {matrix.name}: {len(matrix.cells)} cells ({matrix.path})")
    print(f"{'status':<8} {'cell':<58} {'key':<16}  predicted GiB/GPU (train, eval); time on {target.name}")
    for cell in matrix.cells:
        p = predict(cell, data_dir)
        memory = "unknown (no local config.json)" if p is None else f"{_gb(p.train_gb)}, {_gb(p.eval_gb)}"
        memory += f"; {time_plan.cell_text(times[cell.key])}"
        skip = f"  {SKIPPED} ({too_big[cell.key]})" if cell.key in too_big else ""
        print(f"{cell_status(cell, last):<8} {cell.id:<58} {cell.key:<16}  {memory}{skip}")
    steps = plan(matrix.cells, records, _retry(args.retry), args.rerun)
    if too_big:
        steps = [s for s in steps if s.cell.key not in too_big]
        print(f"{len(too_big)} cells would not fit the visible GPUs; `bench run --force` runs them anyway")
    print("\n".join(recipe_lines(list(matrix.cells))))
    print(f"{len(steps)} steps to run")
    print("\n".join(time_plan.total_lines(steps, times, target)))
    if args.executor == "ray":
        from bench.orchestration.parallel_plan import parallel_view

        print("\n".join(parallel_view(steps)))
        return 0
    for step in steps:
        print(f"  {step.phase:<5} {step.cell.id}")
    return 0


def _gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _optional_data_dir(args) -> Path | None:
    try:
        return resolve_data_dir(getattr(args, "data_dir", None))
    except DataError:
        return None


def cmd_run(args) -> int:
    from bench.orchestration.matrix_run import RunRequest, run_matrix

    matrix = select(load_matrix(args), args.only)
    store = Store(results_dir(args))
    tracker = tracker_for(args.track, matrix, store)
    store = store if tracker is None else TrackedStore(store, tracker)  # the sink sees each appended record
    if not args.no_report:  # now, not after the whole matrix ran
        _check_reports_dir(Path(args.reports_dir), matrix.name)
    request = RunRequest(
        matrix, resolve_data_dir(args.data_dir), store, _retry(args.retry), args.rerun,
        args.force, args.executor, args.node_retries,
    )  # fmt: skip

    def finish(skipped: dict[str, str]) -> None:
        if tracker is not None:
            log_store(tracker, matrix, store)  # a resumed matrix: what earlier runs did not log, too
        if not args.no_report:
            _report(matrix, store, Path(args.reports_dir), skipped, tracker)

    status = run_matrix(request, finish)
    if tracker is not None:
        print(tracker.summary())  # a tracker's failure never changes the exit status
    return status


def cmd_report(args) -> int:
    matrix = load_matrix(args)
    _check_reports_dir(Path(args.reports_dir), matrix.name)
    skipped = unfit(matrix.cells, _optional_data_dir(args), fit.visible_gpu_gb())
    _report(matrix, Store(results_dir(args)), Path(args.reports_dir), skipped)
    return 0


def _check_reports_dir(folder: Path, name: str) -> None:
    from bench.core.store import check_output_dir
    from bench.report.render import report_paths

    check_output_dir(folder, "reports", "pass --reports-dir a writable folder")
    for path in report_paths(folder, name):
        if path.exists() and not path.is_file():
            raise StoreError(f"{path} is not a file, so the report cannot be written there; move it away")


def _report(matrix: Matrix, store: Store, out_dir: Path, skipped: dict[str, str], tracker=None) -> None:
    from bench.report.render import ReportError, write_reports

    try:
        paths = write_reports(
            matrix.name, matrix.description, list(matrix.cells), store.records(), out_dir,
            skipped=skipped, deviations=matrix.deviations, comparisons=matrix.comparisons,
            results_dir=store.root, tracking=tracker.summary() if tracker else None,
        )  # fmt: skip
    except ReportError as exc:
        raise StoreError(str(exc)) from exc
    print("report: " + ", ".join(str(p) for p in paths))
    if tracker is not None:
        tracker.report(paths)


def cmd_track(args) -> int:
    from bench.tracking.commands import track

    return track(load_matrix(args), Store(results_dir(args)), args.to, Path(args.reports_dir))


def cmd_export(args) -> int:
    from bench.export.command import export

    return export(load_matrix(args), Store(results_dir(args)), args.cell_id, args.to, args.merged,
                  args.dequantize, _optional_data_dir(args))  # fmt: skip


def cmd_tasks(args) -> int:
    from bench.core.catalog import TASKS_DIR
    from bench.core.task_yaml import stale_builtin_yamls, user_yaml_dir, write_yamls
    from bench.core.tasks import REGISTRY, builtin_tasks

    user = [spec for folder in args.tasks_dir or [] for spec in REGISTRY.add_folder(Path(folder))]
    if args.write:
        written = write_yamls(list(builtin_tasks().values()), TASKS_DIR)
        print(f"{len(written)} lm-eval YAMLs in {TASKS_DIR}")
        return 0
    include = user_yaml_dir(user) if user else TASKS_DIR
    if args.path:  # for stock lm-eval: lm_eval --include_path "$(bench tasks --path)" ...
        print(include)
        return 0
    from bench.workers.taskcheck import check_tasks, list_tasks

    if args.check:
        data_dir = _optional_data_dir(args)
        problems = [] if user else stale_builtin_yamls(list(builtin_tasks().values()))
        problems += check_tasks(include, metadata={"data_dir": str(data_dir) if data_dir else None})
        for problem in problems:
            print(f"problem: {problem}", file=sys.stderr)
        print(f"{len(problems)} problems in {include}")
        return 1 if problems else 0
    print("\n".join(list_tasks(include)))
    return 0


def cmd_data(args) -> int:
    from bench.core.catalog import tasks as known_tasks

    if args.action == "fetch":
        from bench.fetching.fetch import MIRROR_ENV, fetch, fetch_dir, select_sources

        mirror = args.mirror or os.environ.get(MIRROR_ENV)
        fetch(select_sources(args.tasks), fetch_dir(args.data_dir), mirror)
        return 0
    data_dir = resolve_data_dir(args.data_dir)
    print(f"data directory {data_dir}")
    for task in known_tasks():
        try:
            info = load_splits(task, data_dir).info
        except DataError as exc:
            print(f"{task:<11} not usable: {exc}")
            continue
        print(f"{task:<11} train {info.train_rows:>6}  test {info.test_rows:>5}  {info.note}")
    return 0


def cmd_doctor(args) -> int:
    from bench.workers.doctor import report

    try:
        data_dir = resolve_data_dir(args.data_dir)
    except DataError:
        data_dir = None
    for name, value in report(results_dir(args), data_dir):
        print(f"{name:<13} {value}")
    return 0


def cmd_check(args) -> int:
    """The regression gate: exit 1 with a diff table when a metric regressed or a cell/record is missing,
    3 when the only failure is a speed series too noisy to decide (bench.gate.check._status).

    --run: first the matrix exactly as `bench run` does (resumes; no report), then, unless --no-speed, a
    speed series for each trained cell with none after its training: bench's training and the plain
    script (bench.workers.plain: HF Trainer + peft) alternately, --speed-reps times each, so that
    train_speed_vs_plain compares per-step throughput measured side by side under the same load.
    """
    from bench.core.samples import SampleReader
    from bench.gate.check import CheckError, gate, speed_floors

    matrix = load_matrix(args)
    if args.speed_reps < 1 or args.speed_steps <= WARMUP_STEPS or args.speed_more_rounds < 0:
        raise MatrixError(
            f"--speed-reps needs >= 1, --speed-more-rounds >= 0 and --speed-steps > {WARMUP_STEPS} (the "
            "warm-up steps are not timed)"
        )
    if args.run:
        from bench.gate.speed_run import measure_speed
        from bench.orchestration.launch import Launcher

        run_argv = ["run", args.matrix, "--no-report", "--results-dir", str(results_dir(args))]
        run_argv += [f"--set={item}" for item in args.set or []]
        run_argv += [f"--tasks-dir={folder}" for folder in args.tasks_dir or []]
        cmd_run(parser().parse_args(run_argv + (["--data-dir", args.data_dir] if args.data_dir else [])))
        store = Store(results_dir(args))
        if not args.no_speed:
            data_dir = resolve_data_dir(args.data_dir)
            launcher = Launcher(store.root.resolve(), data_dir, matrix.name, timing_steps=args.speed_steps)
            try:
                floors = speed_floors(Path(args.baseline))
            except CheckError as exc:
                raise MatrixError(str(exc)) from exc
            measure_speed(matrix.cells, store, launcher, args.speed_reps, floors=floors,
                          more_rounds=args.speed_more_rounds)  # prints each repetition
    try:
        store = Store(results_dir(args))
        status, text = gate(matrix.cells, matrix.name, store.records(), Path(args.baseline), args.update,
                            SampleReader(store.root), speed=not args.no_speed)  # fmt: skip
    except CheckError as exc:
        raise MatrixError(str(exc)) from exc  # a bad baseline file is bad input: exit 2
    print(text)
    return status


def _retry(text: str | None) -> frozenset[Status]:
    if not text:
        return frozenset()
    try:
        return frozenset(Status(s.strip()) for s in text.split(","))
    except ValueError as exc:
        raise MatrixError(f"--retry: {exc}; use a comma list of oom, failed, timeout") from exc


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--results-dir", help=f"where records.jsonl lives (env {RESULTS_ENV}; default results/)"
    )
    matrix_opts = argparse.ArgumentParser(add_help=False)
    matrix_opts.add_argument(
        "--set", action="append", metavar="NAME=VALUE",
        help="override a setting for every cell, e.g. --set train.lr=2e-4 --set lora.alpha=32 (repeatable)",
    )  # fmt: skip
    matrix_opts.add_argument(
        "--tasks-dir", action="append", metavar="DIR",
        help="a folder of your own task files, beside the matrix's tasks_dir (repeatable)",
    )  # fmt: skip
    for name, func, help_text in (
        ("plan", cmd_plan, "list every cell with its status and the steps a run would take"),
        ("run", cmd_run, "train and evaluate the cells a matrix still needs, then write the report"),
        ("report", cmd_report, "render reports/<matrix>.md/.html/.csv from the records alone"),
    ):
        s = sub.add_parser(name, parents=[common, matrix_opts], help=help_text)
        s.add_argument("matrix", help="a matrix YAML, e.g. matrices/smoke.yaml")
        s.set_defaults(func=func)
        if name != "report":
            s.add_argument(
                "--retry", help="rerun cells whose last record has these statuses, e.g. oom,failed"
            )
            s.add_argument(
                "--rerun", action="store_true", help="rerun every cell (new records; old ones stay)"
            )
            s.add_argument("--only", metavar="REGEX", help="only the cells whose id matches, e.g. 4bit-r4")
            s.add_argument(
                "--executor", choices=("local", "ray"), default="local",
                help="local: one step after another here (default); ray: steps as Ray tasks on the cluster "
                "named by RAY_ADDRESS, or a local Ray, as many at once as free GPUs allow",
            )  # fmt: skip
        if name == "plan":
            s.add_argument(
                "--data-dir", help="the data folder, for sequence-length estimates (env BENCH_DATA)"
            )
            s.add_argument(
                "--device", metavar="NAME",
                help="predict time on this device: a GPU as torch names it ('NVIDIA H100 80GB HBM3') or "
                "'cpu' (default: the first visible GPU, else this CPU)",
            )  # fmt: skip
        if name != "plan":
            s.add_argument("--reports-dir", default="reports", help="where reports go (default reports/)")
        if name == "run":
            s.add_argument("--data-dir", help="the FinLoRA data folder (env BENCH_DATA)")
            s.add_argument("--no-report", action="store_true")
            s.add_argument(
                "--track", metavar="BACKEND[=URI]",
                help="also log to mlflow (default: SQLite under the results dir; =URI a server) or wandb "
                "(offline unless WANDB_MODE says otherwise); over the matrix's `tracking:`",
            )  # fmt: skip
            s.add_argument(
                "--force", action="store_true", help="run cells the memory planner says cannot fit"
            )
            s.add_argument(
                "--node-retries", type=int, default=0, metavar="N",
                help="--executor ray: submit a step lost with its node (or Ray worker) up to N more times",
            )  # fmt: skip
    t = sub.add_parser("tasks", help="list the lm-eval tasks in tasks/; --check fails if any YAML is skipped")
    t.add_argument("--check", action="store_true")
    t.add_argument(
        "--path", action="store_true", help="print the folder of the task YAMLs (lm_eval --include_path)"
    )
    t.add_argument("--data-dir", help="the data folder the tasks read (env BENCH_DATA)")
    t.add_argument(
        "--tasks-dir", action="append", metavar="DIR",
        help="your own task files: --path then prints the folder of their lm-eval YAMLs",
    )  # fmt: skip
    t.add_argument(
        "--write", action="store_true", help="regenerate tasks/lm-eval/ from the built-in task files"
    )
    t.set_defaults(func=cmd_tasks)
    doc = sub.add_parser(
        "doctor", parents=[common], help="what this machine can run: GPUs, CUDA, 0/1 Adam, disk"
    )
    doc.add_argument("--data-dir")
    doc.set_defaults(func=cmd_doctor)
    c = sub.add_parser(
        "check", parents=[common, matrix_opts],
        help="compare a matrix's records with a baseline; non-zero on regression",
    )  # fmt: skip
    c.add_argument("matrix", help="a matrix YAML, e.g. matrices/ci.yaml")
    c.add_argument("--baseline", required=True, help="baseline JSON/YAML, e.g. baselines/ci.json")
    c.add_argument(
        "--run",
        action="store_true",
        help="first run what the matrix still needs, as `bench run`, then the speed series against the "
        "plain script (bench and plain alternately)",
    )
    c.add_argument(
        "--no-speed", action="store_true",
        help="neither measure nor check train_speed_vs_plain (the output says it was not checked)",
    )  # fmt: skip
    c.add_argument(
        "--speed-reps", type=int, default=REPETITIONS, metavar="N",
        help=f"speed repetitions per side ({REPETITIONS})",
    )  # fmt: skip
    c.add_argument(
        "--speed-steps", type=int, default=STEPS, metavar="N",
        help=f"optimizer steps per speed repetition, the first {WARMUP_STEPS} untimed warm-up ({STEPS})",
    )  # fmt: skip
    c.add_argument(
        "--speed-more-rounds", type=int, default=MORE_ROUNDS, metavar="N",
        help=f"at most N more rounds of --speed-reps per side while a series is undecided ({MORE_ROUNDS})",
    )  # fmt: skip
    c.add_argument("--update", action="store_true", help="rewrite the baseline from the current records")
    c.add_argument("--data-dir", help="the FinLoRA data folder, for --run (env BENCH_DATA)")
    c.set_defaults(func=cmd_check)
    tr = sub.add_parser(
        "track", parents=[common, matrix_opts],
        help="log (or complete) the store's records of a matrix in MLflow or W&B",
    )  # fmt: skip
    tr.add_argument("matrix")
    tr.add_argument("--to", metavar="BACKEND[=URI]", help="mlflow[=URI] or wandb (default: the matrix's)")
    tr.add_argument("--reports-dir", default="reports", help="the report files to log (default reports/)")
    tr.set_defaults(func=cmd_track)
    e = sub.add_parser(
        "export", parents=[common, matrix_opts],
        help="write a cell's adapter or merged model with a model card",
    )  # fmt: skip
    e.add_argument("matrix")
    e.add_argument("cell_id", help="the cell's id, as `bench plan` lists it")
    e.add_argument("--to", required=True, type=Path, help="the folder to write")
    e.add_argument(
        "--merged", action="store_true", help="merge the adapter into its base (peft merge_and_unload)"
    )
    e.add_argument(
        "--dequantize", action="store_true",
        help="with --merged on a 4/8-bit cell: merge onto the 16-bit weights of the same checkpoint",
    )  # fmt: skip
    e.add_argument("--data-dir", help="the data folder (env BENCH_DATA), for the tiny model's tokenizer")
    e.set_defaults(func=cmd_export)
    d = sub.add_parser("data", help="what the data directory holds; `data fetch [TASK...]` downloads it")
    d.add_argument(
        "action", nargs="?", choices=("fetch",), help="fetch: the tasks' public files, sha256-checked"
    )
    d.add_argument("tasks", nargs="*", metavar="TASK", help="tasks or training sets to fetch (default: all)")
    d.add_argument("--data-dir", help="the data folder (env BENCH_DATA); fetch creates it")
    d.add_argument(
        "--mirror",
        metavar="URL",
        help="fetch from a copy laid out like the data folder (env BENCH_DATA_MIRROR)",
    )
    d.set_defaults(func=cmd_data)
    for each in (p, *sub.choices.values()):  # before or after the command: `bench plan X --debug`
        each.add_argument("--debug", action="store_true", default=False if each is p else argparse.SUPPRESS,
                          help="print the full traceback of an unexpected error (else it goes to a log file)")
    return p


def main(argv=None) -> int:
    from bench import cli_errors

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except USER_ERRORS as exc:
        where = f"{args.matrix}: " if isinstance(exc, PlanError) and "matrix" in args else ""
        print(f"error: {where}{exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `bench plan ... | head`
        return 0
    except KeyboardInterrupt:
        return cli_errors.interrupted(args.command, results_dir(args) if "results_dir" in args else None)
    except Exception as exc:  # noqa: BLE001 - one line and a log file instead of a traceback
        return cli_errors.unexpected(exc, args.command, getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
