"""The gate's speed check: the lower bound of bench's speed ratio over the plain script (bench.gate.speed)
must stay at or above a floor. Pure (no torch).

A floor, not a tolerance around the baseline's ratio: the interval already carries the spread measured
in this run, and a ratio from another machine (or another day's load) is no baseline for this one. The
baseline file may raise or lower the floor per cell ("floor" in its entry); its "value" is what the
last --update measured, shown for reference.
A series that is missing or has a failed repetition fails the check: a speed nobody measured is not a
pass. `--no-speed` turns the check off, and the gate says so.
"""

from __future__ import annotations

from bench.gate.rows import Row
from bench.gate.speed import FLOOR, TOO_NOISY, SpeedRatio, decide

SPEED = "train_speed_vs_plain"
UNDECIDED = 3  # bench check's exit status when the only failures are TOO NOISY speed rows
HINT = (
    "the interval comes from this run's spread; a neighbour busy during some repetitions widens it. "
    "Rerun on a quieter machine with a fresh --results-dir, or time more repetitions (--speed-reps)"
)


def speed_row(cell_id: str, entry: dict | None, result: SpeedRatio | str) -> Row:
    floor = floor_of(entry)
    before = None if entry is None else entry.get("value")
    if isinstance(result, str):
        return Row(cell_id, SPEED, before, None, f"{result}; --no-speed skips the check", "MISSING")
    verdict = decide(result, floor)
    text = f"95% low >= {floor:g}x; {result.text()}"
    if verdict == TOO_NOISY:
        text += (f": could not decide after {result.repetitions} repetitions per side (the interval "
                 f"straddles the floor; the estimate is at or above it)")  # fmt: skip
    return Row(cell_id, SPEED, before, result.estimate, text, verdict)


def floor_of(entry: dict | None) -> float:
    """The cell's floor: its baseline entry's, else the default."""
    return float((entry or {}).get("floor", FLOOR))


def speed_lines(speeds: dict[str, SpeedRatio | str]) -> list[str]:
    """One line per measured cell: "<cell>: train_speed_vs_plain 1.45x [1.31, 1.58] (how)"."""
    return [f"{cell}: {SPEED} {r.text()} ({r.detail()})" for cell, r in speeds.items()
            if isinstance(r, SpeedRatio)]  # fmt: skip


def speed_entry(result: SpeedRatio, old: dict | None) -> dict:
    """The baseline file's entry for --update: this run's ratio and interval, the floor kept."""
    return {
        "value": round(result.estimate, 3),
        "low": round(result.low, 3),
        "high": round(result.high, 3),
        "floor": (old or {}).get("floor", FLOOR),
        "kind": "floor",
        "better": "higher",
    }
