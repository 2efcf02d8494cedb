"""Which speed records belong together: a series of repetitions that `bench check --run` ran alternately
(bench's training worker as phase `speed`, the plain script as phase `plain`) for one cell after its
training. `bench check` reads the newest series' ratio; `--run` starts a series where none is complete.

Each repetition is its own record; bench.gate.speed_run stamps its metrics with the series id, its order
in the series and the series' planned length (SERIES, ORDER, PLANNED). Plain-script records from before
series existed carry none of these: they load, and no series uses them.
"""

from __future__ import annotations

from bench.core.cell import Cell
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import latest
from bench.gate.speed import Repetition, SpeedRatio, speed_ratio

SERIES, ORDER, PLANNED = "speed_series", "speed_order", "speed_planned"
SIDES = {Phase.SPEED: "bench", Phase.PLAIN: "plain"}


def newest_series(train: RunRecord, records: list[RunRecord]) -> list[RunRecord]:
    """The records of the newest series of `train`'s cell made after `train` (one from before it timed
    the code of an older training run), in store order; [] when there is none."""
    after = records[_index(train, records) + 1 :]
    mine = [r for r in after if r.phase in SIDES and r.cell_key == train.cell_key and SERIES in r.metrics]
    if not mine:
        return []
    series = mine[-1].metrics[SERIES]
    return [r for r in mine if r.metrics[SERIES] == series]


def _index(record: RunRecord, records: list[RunRecord]) -> int:
    """Its place in `records` (the very object, as latest() hands it out; else an equal record)."""
    found = next((i for i, r in enumerate(records) if r is record), None)
    return found if found is not None else records.index(record)


def series_ratio(series: list[RunRecord]) -> SpeedRatio | str:
    """The series' speed ratio, or why it has none (a repetition failed, is missing, or cannot be read)."""
    if not series:
        return "no speed series after its training (`bench check --run` measures one)"
    # A series the gate extended (too noisy to decide) stamps its later rounds with the longer length.
    planned = max(int(r.metrics.get(PLANNED) or 0) for r in series)
    for record in series:
        if record.status != Status.OK:
            why = (record.error or "see its log").splitlines()[-1]
            side = "plain-script" if record.phase == Phase.PLAIN else "bench"
            return f"{side} repetition {record.metrics[ORDER] // 2 + 1} {record.status} ({why})"
    if len(series) != planned:
        return f"the speed series has {len(series)} of {planned} repetitions (interrupted?)"
    try:
        reps = [_repetition(r) for r in series]
        return speed_ratio(reps)
    except (KeyError, TypeError, ValueError) as exc:
        return f"speed series unreadable: {exc}"


def _repetition(record: RunRecord) -> Repetition:
    m = record.metrics
    return Repetition(SIDES[record.phase], int(m[ORDER]), tuple(m["step_s"]), tuple(m["step_tokens"]))


def complete(series: list[RunRecord]) -> bool:
    return bool(series) and isinstance(series_ratio(series), SpeedRatio)


def speed_needed(cells: tuple[Cell, ...], records: list[RunRecord]) -> tuple[list[Cell], list[str]]:
    """The trained cells that need a speed series, and notes for those that cannot have one.

    Needed: the cell's latest training is ok and no complete series follows it. Not on every `--run`: a
    gate rerun over a store that already holds a series keeps it. A series with a failed or missing
    repetition does not count, so the next `--run` measures a new one.
    """
    last = latest(records)
    todo, notes = [], []
    for cell in cells:
        train = last.get((cell.key, Phase.TRAIN))
        if cell.is_base or train is None or train.status != Status.OK:
            continue  # the gate reports the missing training itself
        if cell.gpus > 1:
            notes.append(f"{cell.id}: bench trains on {cell.gpus} processes, the plain script on one; no run")
        elif not complete(newest_series(train, records)):
            todo.append(cell)
    return todo, notes
