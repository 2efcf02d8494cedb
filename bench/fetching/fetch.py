"""`bench data fetch [TASK...]`: each task's public source files into the data folder, checked by sha256.

The sources are declared in each task file's `sources:` list (tasks/<name>.yaml; bench.core.sources).
A file already there with the right sha256 is kept (a second fetch resumes); one with another sha256
is left alone and reported. Bytes are checked before they land: a download whose sha256 differs is
refused and nothing is written; a good one is written to a temporary file beside its target and
renamed into place. `--mirror
URL` (or BENCH_DATA_MIRROR) reads every file from a copy laid out like the data folder
(<mirror>/fpb/test.jsonl) instead of upstream: for air-gapped sites. Offline, it says what to put where.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.core.catalog import training_sets
from bench.core.data import DATA_ENV, DataError
from bench.core.sources import Source, all_sources
from bench.fetching.conversions import convert

MIRROR_ENV = "BENCH_DATA_MIRROR"
GITHUB_RAW = "https://raw.githubusercontent.com"
TIMEOUT_S = 60
CHUNK = 1 << 20


class FetchError(DataError):
    """Bad input or a refused file: the CLI prints it and exits 2."""


class Refused(Exception):
    """A file that must not land: wrong sha256, or not found where its source says."""


class Offline(Exception):
    """The network (or the mirror's host) cannot be reached: stop trying, say what to put where."""


def select_sources(names: list[str]) -> list[Source]:
    """The sources of the named tasks (or training sets, e.g. `xbrl`), each file once; all when none."""
    table = all_sources()
    tasks: list[str] = []
    for name in names or list(table):
        if name in table:
            tasks.append(name)
        elif name in (sets := training_sets()):
            tasks += sets[name].train_tasks + sets[name].eval_tasks
        else:
            raise FetchError(f"unknown task {name!r} for `bench data fetch`; known: {', '.join(table)}")
    unique = {s.path: s for task in tasks for s in table.get(task, ())}
    return list(unique.values())


def fetch_dir(flag: str | None) -> Path:
    raw = flag or os.environ.get(DATA_ENV)
    if not raw:
        raise FetchError(f"where to? pass --data-dir DIR or set {DATA_ENV} (the folder bench reads)")
    path = Path(raw).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FetchError(
            f"cannot create the data folder {path} ({exc.strerror}); pick another --data-dir"
        ) from exc
    return path


def fetch(sources: list[Source], data_dir: Path, mirror: str | None = None, upstream: str = GITHUB_RAW,
          echo: Callable[[str], None] = print) -> None:  # fmt: skip
    """Fetch every source not yet present; raise FetchError naming each file refused or left to the user.

    `upstream` replaces https://raw.githubusercontent.com in the declared URLs (a proxy of raw GitHub).
    """
    tally = _Tally(echo)
    for source in sources:
        target = data_dir / source.path
        if target.is_file():
            tally.check_present(source, target)
        elif tally.offline or not (source.fetchable or (mirror and source.sha256)):
            tally.by_hand.append(source)
        else:
            tally.get(source, target, lambda s=source: _obtain(s, mirror, upstream, echo))
    echo(f"data folder {data_dir}: {tally.fetched} fetched, {tally.present} already present")
    _finish(data_dir, tally.problems, tally.by_hand, tally.offline, mirror, echo)


@dataclass
class _Tally:
    echo: Callable[[str], None]
    fetched: int = 0
    present: int = 0
    problems: list[str] = field(default_factory=list)
    by_hand: list[Source] = field(default_factory=list)  # not fetchable, or not fetched because offline
    offline: str | None = None  # the host that could not be reached, and why

    def check_present(self, source: Source, target: Path) -> None:
        if source.sha256 is None:  # a file nobody could pin: kept as it is
            self.present += 1
            self.echo(f"present  {source.path} (no sha256 declared: not checked)")
            return
        got = sha256_file(target)
        if got == source.sha256:
            self.present += 1
            self.echo(f"present  {source.path}")
            return
        self.problems.append(
            f"{target} is already there but is not the file this source names (sha256 {got}, expected "
            f"{source.sha256}): move it away, then fetch again"
        )

    def get(self, source: Source, target: Path, obtain: Callable[[], bytes]) -> None:
        try:
            data = obtain()
        except Offline as exc:
            self.offline = str(exc)
            self.by_hand.append(source)
            return
        except Refused as exc:
            if not source.fetchable:  # the mirror lacks it too: the user's to put there
                self.by_hand.append(source)
                return
            self.problems.append(
                f"{source.path}: {exc}; nothing was written to {target}. Fetch again, check the source (or "
                f"the mirror's copy), or put a file with sha256 {source.sha256} there"
            )
            return
        write_atomic(target, data)
        self.fetched += 1
        self.echo(f"ok       {source.path}  {len(data):,} bytes, sha256 {source.sha256[:12]}")


def _finish(data_dir: Path, problems: list[str], by_hand: list[Source], offline: str | None,
            mirror: str | None, echo: Callable[[str], None]) -> None:  # fmt: skip
    left = [s for s in by_hand if offline or not s.fetchable]
    if left and not offline:  # only files no source can give: a note, the tasks still run (local split)
        for s in left:
            sha256 = s.sha256 or "unknown"
            echo(f"not fetchable: put the file at {data_dir / s.path} (sha256 {sha256}): {s.note}")
    if offline:
        problems.append(
            f"cannot reach {offline}: offline? Put these files in {data_dir} yourself (or pass --mirror URL "
            f"to a copy laid out like the data folder), then run `bench data fetch` again to check them:\n"
            + "\n".join(f"  {describe(s)}" for s in left)
        )
    if problems:
        hint = "" if mirror or offline else (
            "\nthe task files' `sources:` lists (bench tasks --path, one folder up) name every file's source"
        )
        raise FetchError("\n".join(problems) + hint)


def describe(source: Source) -> str:
    """One line: where the file goes, its sha256 and where it comes from."""
    if source.url:
        origin = f"a copy of {source.url}"
    elif source.conversion:
        origin = f"conversion {source.conversion} of " + ", ".join(u.url for u in source.inputs)
    else:
        origin = f"not fetchable: {source.note}"
    return f"{source.path}  sha256 {source.sha256 or 'unknown'}  ({origin})"


def _obtain(source: Source, mirror: str | None, upstream: str, echo: Callable[[str], None]) -> bytes:
    if mirror:
        return _checked(f"{mirror.rstrip('/')}/{source.path}", source.sha256, echo)
    if source.url:
        return _checked(_rebase(source.url, upstream), source.sha256, echo)
    inputs = [_checked(_rebase(u.url, upstream), u.sha256, echo) for u in source.inputs]
    try:
        data = convert(source.conversion, inputs)
    except (ValueError, KeyError, IndexError) as exc:  # checked inputs, so a bug in bench: say which
        raise Refused(
            f"refused: conversion {source.conversion} failed on its checked inputs ({exc})"
        ) from exc
    got = hashlib.sha256(data).hexdigest()
    if got != source.sha256:
        raise Refused(f"refused: conversion {source.conversion} gave sha256 {got}, expected {source.sha256}")
    return data


def _checked(url: str, sha256: str, echo: Callable[[str], None]) -> bytes:
    echo(f"get      {url}")
    data = download(url)
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise Refused(f"refused: sha256 of {url} is {got}, expected {sha256} (a changed or corrupted copy)")
    return data


def _rebase(url: str, upstream: str) -> str:
    return upstream.rstrip("/") + url[len(GITHUB_RAW) :] if url.startswith(GITHUB_RAW) else url


def download(url: str, timeout: float = TIMEOUT_S) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            chunks = iter(lambda: response.read(CHUNK), b"")
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        raise Refused(f"not found: {url} answered HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if urllib.parse.urlsplit(url).scheme == "file":
            raise Refused(f"not found: {url} ({reason})") from exc
        host = urllib.parse.urlsplit(url).netloc
        raise Offline(f"{host} ({reason})") from exc


def write_atomic(target: Path, data: bytes) -> None:
    """All or nothing: a temporary file beside the target, synced, then renamed over it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()
