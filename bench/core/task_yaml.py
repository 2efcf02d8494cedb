"""The lm-eval task YAMLs of a task file: one per evaluation protocol, so stock `lm_eval --include_path`
runs every task bench runs. Pure (no torch).

Built-in tasks' YAMLs are committed under tasks/lm-eval/ (`bench tasks --write` regenerates them; a test
and `bench tasks --check` fail when they are stale). A user's tasks get theirs in bench's cache, in a
folder named by the content of their task files; `bench tasks --path --tasks-dir DIR` prints it.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from bench.core import protocols
from bench.core.catalog import TASKS_DIR
from bench.core.tasks import TaskSpec

HEADER = "# Generated from {source} by `bench tasks --write`: edit the task file, not this one.\n"
CACHE_ENV = "BENCH_CACHE"


def lm_eval_yamls(spec: TaskSpec) -> dict[str, str]:
    """{file name: YAML text} of the task's lm-eval tasks: `<name>` under bench's protocol and
    `<name><suffix>` under each of the others."""
    out = {}
    for protocol in protocols.PROTOCOLS.values():
        name = spec.name + protocol.task_suffix
        base = protocol.lm_eval_base[spec.answer]
        source = f"../{spec.file.name}" if spec.builtin else str(spec.file)
        lines = [HEADER.format(source=source).rstrip("\n")]
        lines.append(f"include: {base if spec.builtin else TASKS_DIR / base}")
        lines += [f"task: {name}", "dataset_kwargs:", f"  bench_task: {spec.name}"]
        if not spec.builtin:
            lines += [f"  bench_task_file: {spec.file}", f"  bench_task_sha256: {spec.sha256}"]
        lines += _budget_lines(spec, protocol)
        out[f"{name}.yaml"] = "\n".join(lines) + "\n"
    return out


def _budget_lines(spec: TaskSpec, protocol: protocols.Protocol) -> list[str]:
    """generation_kwargs only where the task's budget differs from its base file's (lm-eval replaces
    the whole mapping of an included file, so every setting is written again)."""
    wanted = protocol.budget(spec)
    if wanted == protocol.max_new_tokens[spec.answer]:
        return []
    settings = {"until": "[]", **{k: _yaml_scalar(v) for k, v in protocol.decoding.gen_kwargs().items()}}
    settings["max_gen_toks"] = str(wanted)
    return ["generation_kwargs:"] + [f"  {k}: {v}" for k, v in settings.items()]


def _yaml_scalar(value) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def stale_builtin_yamls(specs: list[TaskSpec], folder: Path = TASKS_DIR) -> list[str]:
    """The committed lm-eval YAMLs that differ from what the task files generate (or are missing)."""
    problems = []
    for spec in specs:
        for name, text in lm_eval_yamls(spec).items():
            path = folder / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                problems.append(f"{path}: not what {spec.file.name} generates; run `bench tasks --write`")
    return problems


def write_yamls(specs: list[TaskSpec], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        for name, text in lm_eval_yamls(spec).items():
            path = folder / name
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                tmp.write_text(text, encoding="utf-8")
                tmp.replace(path)
            written.append(path)
    return written


def user_yaml_dir(specs: list[TaskSpec]) -> Path | None:
    """The cache folder holding the lm-eval YAMLs of the user's tasks (written if missing); None if none."""
    if not specs:
        return None
    digest = hashlib.sha256("".join(sorted(f"{s.file}:{s.sha256}" for s in specs)).encode()).hexdigest()
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bench").expanduser()
    folder = root / "lm-eval-tasks" / digest[:16]
    write_yamls(specs, folder)
    return folder
