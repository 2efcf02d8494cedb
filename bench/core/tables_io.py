"""Reading a task's raw rows: JSON Lines here (line-numbered errors, byte-exact text), CSV, Parquet and
hub datasets through `datasets` (its loaders and its cache). Pure (no torch)."""

from __future__ import annotations

from pathlib import Path

from bench.core.tasks import FORMATS, TaskSpec


def read_table(path: Path, fmt: str | None) -> list[dict]:
    from bench.core.data import DataError, load_rows

    kind = fmt or FORMATS.get(path.suffix)
    if kind == "json" and path.suffix == ".jsonl":
        return load_rows(path)
    try:
        import datasets

        table = datasets.load_dataset(kind, data_files={"rows": str(path)}, split="rows")
    except Exception as exc:  # datasets' own parse errors: name the file and the reader
        if kind == "csv" and _header_only(path):
            return []  # datasets refuses a CSV with no rows; it is an empty split, said as such later
        raise DataError(f"{path}: cannot read it as {kind} ({type(exc).__name__}: {exc})") from exc
    return table.to_list()


def _header_only(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as fh:
        return sum(1 for line in fh if line.strip()) <= 1


def read_hub(spec: TaskSpec, split: str) -> list[dict]:
    """A split of a hub dataset at the task's revision. Offline (HF_DATASETS_OFFLINE, no network) it
    works only from the datasets cache; otherwise the error says what to do."""
    from bench.core.data import DataError

    hub = spec.data.hub
    try:
        import datasets

        table = datasets.load_dataset(hub.path, hub.name, split=split, revision=hub.revision)
    except Exception as exc:
        raise DataError(
            f"{spec.file}: key 'data.hub': cannot load {hub.path!r} split {split!r}"
            f"{f' at revision {hub.revision}' if hub.revision else ''} ({type(exc).__name__}: {exc}); "
            "this needs network access to the Hugging Face hub once (then datasets' cache serves it), "
            "or export the rows to a local file and point data.train/data.test at it"
        ) from exc
    return table.to_list()
