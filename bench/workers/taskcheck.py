"""Check that every task YAML under tasks/ is one lm-eval indexes and can build.

lm-eval skips a YAML it cannot parse and logs that only at debug level, so a broken task simply
vanishes from `--tasks`. This module makes that loud: the names the YAML files declare must
all be indexed by lm-eval's TaskManager, and each must build (loader, filters, metrics).

Convention: files named `_*.yaml` are base files, only pulled in by `include:`; every other
YAML declares a task or group whose name is its file stem (fpb.yaml -> task fpb).
"""

from __future__ import annotations

from pathlib import Path

BASE_PREFIX = "_"


def _yaml_files(include_path: Path) -> list[Path]:
    return sorted(p for p in include_path.rglob("*.yaml") if "__pycache__" not in p.parts)


def _declared_name(path: Path) -> tuple[str | None, str | None]:
    """(task or group name, problem) for one YAML, reading it the way lm-eval's index does."""
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=False)
    except Exception as exc:  # any parse or include error is a problem to report, not a crash
        return None, f"{path}: lm-eval cannot read it ({type(exc).__name__}: {exc})"
    # A group's `task:` is its member list, so `group:` names it when present (as in lm-eval).
    name = cfg["group"] if "group" in cfg else cfg.get("task")
    if not isinstance(name, str):
        return None, (
            f"{path}: has no 'task:' or 'group:' name; a file meant only for include: must be "
            f"named {BASE_PREFIX}*.yaml"
        )
    if name != path.stem:
        return name, f"{path}: declares {name!r}; name the file {name}.yaml or the task {path.stem!r}"
    return name, None


def _base_file_problem(path: Path) -> str | None:
    from lm_eval.tasks._yaml_loader import load_yaml

    try:
        cfg = load_yaml(path, resolve_func=False, recursive=False)
    except Exception as exc:
        return f"{path}: lm-eval cannot read it ({type(exc).__name__}: {exc})"
    if "task" in cfg or "group" in cfg:
        # lm-eval would index it as a task of its own; base files must stay fragments.
        return f"{path}: a {BASE_PREFIX}*.yaml base file must not set 'task:' or 'group:'"
    return None


def declared_tasks(include_path: Path) -> tuple[dict[str, Path], list[str]]:
    """{name: yaml path} for every non-base YAML, and the problems found reading them."""
    names: dict[str, Path] = {}
    problems: list[str] = []
    for path in _yaml_files(include_path):
        if path.name.startswith(BASE_PREFIX):
            problem = _base_file_problem(path)
            problems += [problem] if problem else []
            continue
        name, problem = _declared_name(path)
        problems += [problem] if problem else []
        if name is not None and name in names:
            problems.append(f"{path}: {name!r} is already declared in {names[name]}")
        elif name is not None:
            names[name] = path
    return names, problems


def list_tasks(include_path: Path) -> list[str]:
    """The task and group names declared under include_path, sorted."""
    return sorted(declared_tasks(Path(include_path))[0])


def _build_problem(manager, name: str, path: Path) -> str | None:
    try:
        loaded = manager.load([name])  # what lm_eval.simple_evaluate calls
        if not loaded["tasks"]:
            return f"{path}: {name!r} builds no task"
    except Exception as exc:
        return f"{path}: lm-eval cannot build {name!r} ({type(exc).__name__}: {exc})"
    return None


def check_tasks(include_path: Path, metadata: dict | None = None) -> list[str]:
    """Problems with the YAMLs under include_path; [] when all is well.

    metadata is passed to lm-eval's TaskManager (e.g. {"data_dir": ...}); without it the task
    loader reads the BENCH_DATA environment variable, so data must be reachable to pass.
    """
    include_path = Path(include_path)
    if not include_path.is_dir():
        return [f"{include_path}: no such directory of task YAMLs"]
    names, problems = declared_tasks(include_path)
    if not names:
        return problems + [f"{include_path}: no task YAMLs found"]

    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False, metadata=metadata)
    indexed = set(manager.all_tasks)
    for name, path in names.items():
        if name not in indexed:
            problems.append(f"{path}: {name!r} is not indexed by lm-eval (it skips YAMLs it cannot load)")
            continue
        problem = _build_problem(manager, name, path)
        problems += [problem] if problem else []
    return problems
