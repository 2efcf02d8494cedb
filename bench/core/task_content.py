"""A user task's content, as cell keys see it: the task file's bytes and its local data files'. Pure.

Registering a folder reads every task file in it and checks its data before any model loads (missing
columns, labels outside the declared set, empty splits, unreachable hub datasets: each an error that
names the task file, the row or key, and the fix).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from bench.core.cell import TaskFile
from bench.core.tasks import REGISTRY, TaskSpec


def content_sha256(spec: TaskSpec) -> str:
    """sha256 over the task file and its data files. A task reading the data directory (`folder:`)
    or a hub dataset is keyed by its file alone: the data directory is the machine's, the hub's data
    is pinned by the file's `revision`."""
    from bench.core.data import load_splits

    parts = [spec.sha256]
    if not spec.data.in_data_dir and spec.data.hub is None:
        parts += [
            f"{name}:{digest}" for name, digest in sorted(load_splits(spec.name, None).info.sha256.items())
        ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def register_folders(folders: list[Path]) -> dict[str, TaskFile]:
    """{task name: TaskFile} for every task file in the folders, registered and its data checked."""
    from bench.core.data import load_splits

    out = {}
    for folder in folders:
        for spec in REGISTRY.add_folder(Path(folder)):
            if not spec.data.in_data_dir:
                load_splits(spec.name, None)  # reads and checks every row now, before any model loads
            out[spec.name] = TaskFile(spec.name, str(spec.file), content_sha256(spec))
    return out


def register_cell_tasks(task_files) -> list[TaskSpec]:
    """In a worker: the cell's user tasks registered from their files, refused if their content changed
    since the cell was made (its key would no longer say what it trains on)."""
    specs = []
    for task_file in task_files:
        spec = REGISTRY.add_file(Path(task_file.file))
        if content_sha256(spec) != task_file.sha256:
            raise ValueError(
                f"{task_file.file}: task {task_file.name!r} or its data changed since this cell was made; "
                "run `bench plan`/`bench run` again: the changed task makes new cells"
            )
        specs.append(spec)
    return specs
