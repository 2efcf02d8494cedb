"""Which plain-script run pairs with which bench training: same cell (every setting), same host,
made after the training. `bench check` reads the pair's speed ratio; `--run` starts the runs missing.
"""

from __future__ import annotations

from bench.core.cell import Cell
from bench.core.records import Phase, RunRecord, Status
from bench.core.store import latest


def plain_speed(train: RunRecord, records: list[RunRecord]) -> float | None:
    """tokens/s of the newest ok plain-script record of the same cell (every setting) from the same host,
    made after `train`."""
    plain = newest_plain(train, records, ok=True)
    return None if plain is None else float(plain.metrics["tokens_per_s"])


def newest_plain(train: RunRecord, records: list[RunRecord], ok: bool) -> RunRecord | None:
    # Only after the train record: one from before measured the machine beside another bench run.
    for record in reversed(records):
        if record is train:
            return None
        if _is_plain(record, train.cell_key, train.env.get("host")) and (
            not ok or (record.status == Status.OK and record.metrics.get("tokens_per_s"))
        ):
            return record
    return None


def _is_plain(record: RunRecord, cell_key: str, host: str | None) -> bool:
    # The cell key, not just model/bits/rank: batch, sequence length, steps... all move tokens/s.
    return record.phase == Phase.PLAIN and record.cell_key == cell_key and record.env.get("host") == host


def plain_needed(
    cells: tuple[Cell, ...], records: list[RunRecord], host: str
) -> tuple[list[tuple[Cell, RunRecord]], list[str]]:
    """The trained cells that need a plain-script run on `host`, each with its latest train record; notes
    for those that cannot have one here.

    Needed: the cell's latest train record is ok, from this host, and no ok plain record from this host
    follows it in the store. Not on every `--run`: a gate rerun over a store that already holds the pair
    keeps it (a fresh plain run would pair a new denominator with an old bench run made under other load).
    Not only when none exists at all: after a retrain the old plain run would pair with the new bench run.
    A failed plain run does not count, so the next `--run` tries again.
    """
    last = latest(records)
    todo, notes = [], []
    for cell in cells:
        train = last.get((cell.key, Phase.TRAIN))
        if cell.is_base or train is None or train.status != Status.OK:
            continue  # the gate reports the missing training itself
        trained_on = train.env.get("host")
        if trained_on != host:
            notes.append(f"{cell.id}: trained on host {trained_on}, not here ({host}); no plain-script run")
        elif cell.gpus > 1:
            notes.append(f"{cell.id}: bench trains on {cell.gpus} processes, the plain script on one; no run")
        elif newest_plain(train, records, ok=True) is None:
            todo.append((cell, train))
    return todo, notes
