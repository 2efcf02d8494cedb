"""Where a task's data files come from: the `sources:` list of its task file (tasks/<name>.yaml).

Pure data (no network, no torch): the values `bench data fetch` (bench.fetching) acts on. A Source is
one file of the data folder: a byte copy of a pinned upstream file (`url`), the output of a named
conversion of pinned upstream files (`conversion` + `inputs`: a function in
bench/fetching/conversions.py whose output must have the source's sha256), or neither (not fetchable:
`note` says why and the user puts the file at `path`). Every file is checked by sha256 (a file nobody
could pin has none: it is reported, never fetched). A file two tasks read (the TFNS train file) is
listed in both task files, alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SHA256 = re.compile(r"[0-9a-f]{64}")
SOURCE_KEYS = {"path", "sha256", "url", "conversion", "inputs", "note"}


class SourceError(ValueError):
    pass


@dataclass(frozen=True)
class Upstream:
    """One pinned upstream file a conversion reads."""

    url: str
    sha256: str


@dataclass(frozen=True)
class Source:
    path: str  # under the data folder, e.g. "fpb/test.jsonl"
    sha256: str | None  # of the file as it must lie there; None only for a file nobody could pin
    url: str | None = None  # a byte-for-byte copy of this file
    conversion: str | None = None  # a name in bench.fetching.conversions.CONVERSIONS
    inputs: tuple[Upstream, ...] = ()
    note: str = ""  # why a source without url or conversion cannot be fetched

    @property
    def fetchable(self) -> bool:
        return self.url is not None or self.conversion is not None


def sources_for(task: str) -> tuple[Source, ...]:
    """The files `task` reads, with their public sources; () for a task none are declared for."""
    table = all_sources()
    return table.get(task, ())


def all_sources() -> dict[str, tuple[Source, ...]]:
    """{task: its sources} for every task this process knows that declares any."""
    from bench.core.tasks import REGISTRY

    return {name: spec.sources for name, spec in REGISTRY.all().items() if spec.sources}


def parse_sources(doc, where: str) -> dict[str, tuple[Source, ...]]:
    """{task: {sources: [...]}} -> {task: (Source, ...)}; errors name the file and the key."""
    if not isinstance(doc, dict):
        raise SourceError(f"{where}: must be a mapping of task name -> {{sources: [...]}}")
    table = {}
    for task, block in doc.items():
        if not isinstance(block, dict) or not isinstance(block.get("sources"), list):
            raise SourceError(f"{where}: key '{task}': needs a 'sources:' list")
        table[task] = tuple(
            _source(entry, f"{where}: key '{task}.sources[{i}]'") for i, entry in enumerate(block["sources"])
        )
    return table


def _source(entry, where: str) -> Source:
    if not isinstance(entry, dict):
        raise SourceError(f"{where}: must be a mapping with path and sha256")
    unknown = sorted(set(entry) - SOURCE_KEYS)
    if unknown:
        raise SourceError(f"{where}: unknown key '{unknown[0]}'; known: {', '.join(sorted(SOURCE_KEYS))}")
    path = entry.get("path")
    if not isinstance(path, str) or path.startswith("/") or ".." in path.split("/"):
        raise SourceError(f"{where}: 'path' must be a relative path inside the data folder, got {path!r}")
    url, conversion = entry.get("url"), entry.get("conversion")
    if url is not None and conversion is not None:
        raise SourceError(f"{where}: give 'url' (a byte copy) or 'conversion' with 'inputs', not both")
    inputs = tuple(_upstream(u, f"{where}.inputs[{i}]") for i, u in enumerate(entry.get("inputs") or ()))
    if conversion is not None and not inputs:
        raise SourceError(f"{where}: conversion {conversion!r} needs 'inputs' (each a url and a sha256)")
    if url is not None:
        _check_url(url, where)
    fetchable = url is not None or conversion is not None
    sha256 = None if entry.get("sha256") is None and not fetchable else _sha(entry.get("sha256"), where)
    if not fetchable and not entry.get("note"):
        raise SourceError(f"{where}: a source without 'url' or 'conversion' needs a 'note' saying why")
    return Source(path, sha256, url, conversion, inputs, str(entry.get("note", "")))


def _upstream(entry, where: str) -> Upstream:
    if not isinstance(entry, dict) or set(entry) != {"url", "sha256"}:
        raise SourceError(f"{where}: an input is a mapping with exactly 'url' and 'sha256'")
    _check_url(entry["url"], where)
    return Upstream(entry["url"], _sha(entry["sha256"], where))


def _check_url(url, where: str) -> None:
    if not isinstance(url, str) or not url.startswith("https://"):
        raise SourceError(f"{where}: url must be an https:// address pinned to a commit, got {url!r}")


def _sha(value, where: str) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise SourceError(f"{where}: 'sha256' must be 64 lower-case hex digits, got {value!r}")
    return value
