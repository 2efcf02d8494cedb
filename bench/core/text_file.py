"""Reading a user's text file (a matrix, a task file, a data file) as UTF-8, so that a bad byte is
reported with its line instead of a UnicodeDecodeError. Pure."""

from __future__ import annotations

from pathlib import Path


def read_utf8(path: Path, error: type[Exception], fix: str) -> tuple[bytes, str]:
    """(bytes, text) of the file; `error` names the file, the line of a byte that is not UTF-8, and `fix`."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise error(f"{path}: cannot be read ({exc.strerror})") from exc
    try:
        return data, data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); {fix}") from exc
