"""What a bench command does with an error it did not expect, and with Ctrl-C.

Known bad input (MatrixError, DataError, StoreError, ...) is one line and exit 2 (bench.__main__).
Anything else that escapes a command is one line too, naming the exception and a log file that holds
the full traceback (`--debug` prints it instead): exit 2 for the kinds of error bad input or a bad
environment cause (a file that cannot be read, a value of the wrong type), 1 otherwise. Ctrl-C is one
line saying what was kept and how to go on, exit 130.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

CACHE_ENV = "BENCH_CACHE"
INTERRUPTED = 130
# Errors that, escaping a command, come from what it was given (files, values), not from a run.
INPUT_KINDS = (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError)


def unexpected(exc: BaseException, command: str, debug: bool) -> int:
    """One line on stderr for an error no check caught; the traceback to a log file (or stderr)."""
    text = "".join(traceback.format_exception(exc))
    if debug:
        print(text, file=sys.stderr, end="")
        where = "traceback above"
    else:
        log = _write_log(command, text)
        where = f"full traceback in {log}; --debug prints it" if log else "--debug prints the traceback"
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    print(f"error: bench {command}: {type(exc).__name__}: {first} ({where})", file=sys.stderr)
    return 2 if isinstance(exc, INPUT_KINDS) else 1


def interrupted(command: str, results_dir: Path | None) -> int:
    """Ctrl-C: what is kept and how to resume, in one line."""
    if command in ("run", "check") and results_dir is not None:
        print(
            f"\ninterrupted: every record written so far is kept in {results_dir / 'records.jsonl'}; "
            f"run the same command again to resume (finished steps are not rerun)",
            file=sys.stderr,
        )
    else:
        print(f"\ninterrupted: bench {command} stopped; it changes no records, so nothing was lost",
              file=sys.stderr)  # fmt: skip
    return INTERRUPTED


def _write_log(command: str, text: str) -> Path | None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    name = f"bench-{command}-{stamp}-{os.getpid()}.log"
    cache = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "bench")
    for folder in (cache / "errors", Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8")
            return path
        except OSError:
            continue
    return None
