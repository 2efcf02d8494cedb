"""Where each FinLoRA task's data files come from: the public sources declared in finlora_sources.yaml.

Pure data (no network, no torch): the values `bench data fetch` (bench.fetching) acts on. A Source is
one file of the data folder: a byte copy of a pinned upstream file (`url`), the output of a named
conversion of pinned upstream files (`conversion` + `inputs`), or neither (not fetchable: `note` says
why and the user puts the file at `path`). Every file is checked by sha256 (a file nobody could pin has
none: it is reported, never fetched).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

SOURCES_FILE = "bench/core/finlora_sources.yaml"
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


@cache
def all_sources() -> dict[str, tuple[Source, ...]]:
    import yaml

    text = resources.files("bench.core").joinpath("finlora_sources.yaml").read_text(encoding="utf-8")
    return parse_sources(yaml.safe_load(text), SOURCES_FILE)


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
