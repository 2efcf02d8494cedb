"""Task data: a task file's rows (bench.core.tasks) rendered into `{context, target}` pairs, and seeded
local splits. Pure (no torch).

Local JSON Lines files are read here line by line (errors name file:line, prompts stay byte for byte);
CSV, Parquet and hub datasets are read through `datasets` (cached in its own cache; a hub dataset
needs network the first time). Where a task has one file only, a deterministic local split is made,
grouped by input so that the rows about one headline or sentence land on the same side. Such splits
are marked, because their numbers are not comparable with the source's.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from bench.core import tasks as task_registry
from bench.core.task_parse import template_columns
from bench.core.tasks import GROUP_FINLORA_INPUT, TaskError, TaskSpec

DATA_ENV = "BENCH_DATA"
LOCAL_TEST_FRACTION = 0.3  # the FinLoRA task files' split (tasks/*.yaml say so too)


class DataError(Exception):
    pass


@dataclass(frozen=True)
class SplitInfo:
    task: str
    train_file: str | None
    test_file: str | None
    train_rows: int
    test_rows: int
    local_split: bool
    note: str
    sha256: dict  # file name -> sha256 of its bytes
    task_file: str | None = None  # the task file that says how the rows are read (bench.core.tasks)
    task_sha256: str | None = None  # of that file's bytes: records name the definition they were made by

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Splits:
    train: list[dict]
    test: list[dict]
    info: SplitInfo


def resolve_data_dir(flag: str | os.PathLike | None = None) -> Path:
    raw = flag or os.environ.get(DATA_ENV)
    if not raw:
        raise DataError(
            f"no data directory: pass --data-dir or set {DATA_ENV} to the folder that holds "
            "fpb/, ner/, ... (`bench data fetch` fills one; see README 'Data')"
        )
    path = Path(raw).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise DataError(f"data directory {path} is a file, not a folder (from --data-dir or {DATA_ENV}); "
                        "point it at the folder that holds fpb/, ner/, ...")  # fmt: skip
    if not path.is_dir():
        raise DataError(f"data directory {path} does not exist (from --data-dir or {DATA_ENV})")
    return path


def load_rows(path: Path) -> list[dict]:
    """The objects of a JSON Lines file, in order; blank lines are skipped."""
    rows = []
    for number, line in _numbered_lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg}); fix or remove that line") from exc
        rows.append(_checked_row(path, number, row))
    return rows


def _numbered_lines(path: Path) -> list[tuple[int, str]]:
    """The file's lines as UTF-8 text; a byte that is not UTF-8 is an error naming its line."""
    from bench.core.text_file import read_utf8

    _, text = read_utf8(path, DataError, "re-save the file as UTF-8")
    return list(enumerate(text.split("\n"), start=1))


def _checked_row(path: Path, number: int, row) -> dict:
    """A row is a JSON object; which columns it needs, and what its target may be, the task file says
    (render_rows checks them against its templates and label set)."""
    if not isinstance(row, dict):
        raise DataError(f"{path}:{number}: a row must be a JSON object with the task's columns, "
                        f"not {type(row).__name__}")  # fmt: skip
    return row


def group_key(context: str) -> str:
    """The input a FinLoRA row asks about: rows sharing it must not straddle train and test."""
    marker = context.rfind("\nInput:")
    text = context[marker:] if marker >= 0 else context
    return text.split("\nAnswer:")[0].strip()


def in_local_test(key: str, salt: str, fraction: float) -> bool:
    digest = hashlib.sha256((salt + key).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _first_existing(folder: Path, names: tuple[str, ...]) -> Path | None:
    for path in (folder / n for n in names):
        if path.exists() and not path.is_file():  # a folder named test.jsonl is no reason for a local split
            raise DataError(f"{path} is not a file; remove it or put the task's rows there as JSONL")
        if path.is_file():
            return path
    return None


def data_folder(spec: TaskSpec, data_dir: Path | None) -> Path:
    if not spec.data.in_data_dir:
        return spec.data.root
    if data_dir is None:
        raise DataError(f"task {spec.name!r} reads the data directory: pass --data-dir or set {DATA_ENV}")
    return data_dir / spec.data.root


def task_files(task: str, data_dir: Path | None) -> tuple[Path | None, Path | None]:
    spec = task_registry.get(task)
    if spec.data.hub is not None:
        return None, None
    folder = data_folder(spec, data_dir)
    return _first_existing(folder, spec.data.train), _first_existing(folder, spec.data.test)


def check_task_data(task: str, data_dir: Path | None) -> None:
    """Fail before any model loads if a task has nothing to read."""
    spec = task_registry.get(task)
    if spec.data.hub is not None:
        return
    train, test = task_files(task, data_dir)
    if train is None and test is None:
        folder = data_folder(spec, data_dir)
        where = (
            f"`bench data fetch {task}` or point --data-dir/{DATA_ENV} at the FinLoRA data"
            if (spec.data.in_data_dir)
            else f"put the files there or fix 'data' in {spec.file}"
        )
        raise DataError(
            f"task {task!r}: no data in {folder} (looked for "
            f"{', '.join(spec.data.train + spec.data.test)}); {where}"
        )


def load_splits(task: str, data_dir: Path | None) -> Splits:
    """A task's train and test rows as {context, target}. Read and hashed once per process while the
    files stay unchanged (a run asks for the same task from the CLI's check, the planner and the report)."""
    try:
        spec = task_registry.get(task)
    except TaskError as exc:
        raise DataError(str(exc)) from exc
    if spec.data.hub is not None:
        return _load_hub(spec)
    check_task_data(task, data_dir)
    files = task_files(task, data_dir)
    stamps = tuple(None if p is None else (p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    return _load_splits(spec, files, stamps)


@lru_cache(maxsize=64)
def _load_splits(spec: TaskSpec, files: tuple[Path | None, Path | None], stamps: tuple) -> Splits:
    from bench.core.tables_io import read_table

    train_path, test_path = files
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files if p is not None}
    raw = {
        side: None if p is None else (read_table(p, spec.data.format), str(p))
        for side, p in (("train", train_path), ("test", test_path))
    }
    return _splits(
        spec, raw, sums, f"{(train_path or test_path).parent.name}/{(train_path or test_path).name}"
    )


def _load_hub(spec: TaskSpec) -> Splits:
    from bench.core.tables_io import read_hub

    hub = spec.data.hub
    raw = {
        side: None if split is None else (read_hub(spec, split), f"{hub.path}[{split}]")
        for side, split in (("train", hub.train), ("test", hub.test))
    }
    revision = {f"{hub.path}@{hub.revision or 'unpinned'}": hub.revision or ""}
    return _splits(spec, raw, revision, f"{hub.path}[{hub.train or hub.test}]")


def _splits(spec: TaskSpec, raw: dict, sums: dict, source: str) -> Splits:
    rendered = {side: None if r is None else render_rows(spec, *r) for side, r in raw.items()}
    if rendered["train"] is not None and rendered["test"] is not None:
        train, test, local, note = rendered["train"], rendered["test"], False, "published splits"
    else:
        rows = rendered["train"] if rendered["train"] is not None else rendered["test"]
        rule = spec.split
        test = [r for r in rows if in_local_test(_group(spec, r), rule.seed, rule.test_fraction)]
        train = [r for r in rows if not in_local_test(_group(spec, r), rule.seed, rule.test_fraction)]
        local = True
        note = (
            f"local split of {source} ({1 - rule.test_fraction:.0%} train / "
            f"{rule.test_fraction:.0%} test by input hash): not comparable with the paper"
        )
    for side, rows in (("test", test), ("train", train)):
        if not rows and (side == "test" or rendered["train"] is not None):
            raise DataError(f"task {spec.name!r} ({spec.file}): the {side} split is empty ({source})")
    names = {side: None if r is None else r[1] for side, r in raw.items()}
    info = SplitInfo(
        task=spec.name,
        train_file=names["train"],
        test_file=names["test"],
        train_rows=len(train),
        test_rows=len(test),
        local_split=local,
        note=note,
        sha256=sums,
        task_file=str(spec.file),
        task_sha256=spec.sha256,
    )
    return Splits(train=[_pair(r) for r in train], test=[_pair(r) for r in test], info=info)


def _pair(row: dict) -> dict:
    return {"context": row["context"], "target": row["target"]}


def _group(spec: TaskSpec, row: dict) -> str:
    group = spec.split.group_by
    if group == GROUP_FINLORA_INPUT:
        return group_key(row["context"])
    return row["context"] if group is None else str(row["_columns"][group])


def render_rows(spec: TaskSpec, rows: list[dict], source: str) -> list[dict]:
    """{context, target, _columns} per row; a missing column, an empty value or a target outside the
    label set names the row and the fix."""
    from bench.core.task_parse import renderer

    needed = template_columns(spec.prompt) | template_columns(spec.target)
    group = spec.split.group_by
    needed |= {group} if group not in (None, GROUP_FINLORA_INPUT) else set()
    prompt, target = renderer(spec.prompt), renderer(spec.target)
    out = []
    for number, row in enumerate(rows, start=1):
        _check_columns(spec, row, needed, f"{source} row {number}")
        label = _label(spec, target(row), f"{source} row {number}")
        out.append({"context": prompt(row), "target": label, "_columns": row})
    return out


def _check_columns(spec: TaskSpec, row: dict, needed: set[str], where: str) -> None:
    missing = sorted(c for c in needed if c not in row)
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(map(repr, missing))} (task file {spec.file}); "
            f"the row has {', '.join(map(repr, row))}: fix the templates or the data"
        )
    empty = sorted(c for c in needed if row[c] is None)
    if empty:
        raise DataError(f"{where}: column {', '.join(map(repr, empty))} is empty; fill it or remove the row")


def _label(spec: TaskSpec, text: str, where: str) -> str:
    label = spec.label_map.get(text, text)
    if not label.strip():
        raise DataError(f"{where}: the target is empty; give the answer's text, or remove the row")
    if spec.is_label and label not in spec.labels:
        raise DataError(
            f"{where}: target {label!r} is not a label of task {spec.name!r} ({', '.join(spec.labels)}); "
            f"add it to answer.labels or label_map in {spec.file}, or fix the row"
        )
    return label
