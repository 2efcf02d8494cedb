"""Which cells the report compares, pair by pair. Pure (no torch).

A matrix may name its questions:

    compare:
      - {a: {bits: 4, rank: 4}, b: {bits: 8, rank: 8}, margin: 2.0}   # equivalence within 2 points?
      - {a: {method: dora}, b: {method: lora}}                          # is DoRA better or worse?

Cell A matches `a`, cell B matches `b`, and every axis neither side names must be equal (same model,
task, GPUs, eval bits, batch, seed...): so a pair is always "the same experiment but for what the
question names", and N seeds give N pairs, seed with seed. Without `compare`, each bits/rank/method
configuration is compared with the matrix's first one. Every adapter is also compared with its base
row (same model, task, GPUs and eval bits), whatever `compare` says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.core import axes as registry
from bench.core.cell import Cell

CONFIG_AXES = ("bits", "rank", "method")  # what the default comparisons vary
# Read from every cell, named by its matrix or not: two cells differing in any of them are never
# "the same experiment but for ..." (e.g. a 4-bit cell under bench and an 8-bit one under finlora-2025).
ALWAYS = tuple(a.name for a in registry.NAMED)


@dataclass(frozen=True)
class Comparison:
    a: tuple[tuple[str, object], ...]  # selector: (axis, value or tuple of values)
    b: tuple[tuple[str, object], ...]
    margin: float | None = None  # points of accuracy: ask "equivalent within ±margin?" (TOST)

    @property
    def named(self) -> set[str]:
        return {axis for axis, _ in self.a + self.b}


@dataclass(frozen=True)
class Pair:
    a: Cell
    b: Cell  # the reference: differences are a minus b
    kind: str  # "vs base" | "named" (the matrix's compare) | "default"
    margin: float | None = None


def axis_values(cell: Cell) -> dict:
    """{axis: value}: every named axis read from the cell's settings, and the setting axes (lr, ...)
    its matrix swept, as the expansion carried them on the cell. A base row's training axes are None."""
    values = {name: registry.AXES[name].read(cell) for name in ALWAYS}
    values["model"] = cell.model.name
    values.update({name: value for name, value in cell.axes if name not in values})
    return values


def parse_comparisons(raw, ctx) -> tuple[Comparison, ...]:
    """The matrix's `compare` list; ctx.fail(key, fix) reports a mistake, naming the key."""
    if not isinstance(raw, list):
        ctx.fail("compare", "must be a list like [{a: {bits: 4, rank: 4}, b: {bits: 8, rank: 8}, margin: 2}]")
    out = []
    for i, entry in enumerate(raw):
        key = f"compare[{i}]"
        if not isinstance(entry, dict) or "a" not in entry or "b" not in entry:
            ctx.fail(key, "each comparison needs 'a' and 'b', e.g. {a: {method: dora}, b: {method: lora}}")
        ctx.check_keys(entry, ("a", "b", "margin"), f"{key}.")
        sides = [_selector(entry[side], ctx, f"{key}.{side}") for side in ("a", "b")]
        margin = entry.get("margin")
        if margin is not None and (
            isinstance(margin, bool) or not isinstance(margin, int | float) or not 0 < margin < math.inf
        ):  # NaN fails `0 < margin` too
            ctx.fail(
                f"{key}.margin", f"must be a positive number of accuracy points (e.g. 2), not {margin!r}"
            )
        out.append(Comparison(sides[0], sides[1], None if margin is None else float(margin)))
    return tuple(out)


def _selector(raw, ctx, key: str) -> tuple[tuple[str, object], ...]:
    from bench.core.expand import canonical_keys

    if not isinstance(raw, dict) or not raw:
        ctx.fail(key, "must be a non-empty mapping of axis values, e.g. {bits: 4, rank: 4}")
    named = canonical_keys(ctx, raw, f"{key}.")
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in named.items()))


def unmatched(comparisons: tuple[Comparison, ...], cells: tuple[Cell, ...]) -> list[int]:
    """Indexes of comparisons that pair no two cells of the matrix (a typo, or an excluded side)."""
    return [i for i, comp in enumerate(comparisons) if not _pairs_for(comp, cells, "named")]


def default_comparisons(cells: tuple[Cell, ...]) -> tuple[Comparison, ...]:
    """Each bits/rank/method configuration against the matrix's first one."""
    configs = list(dict.fromkeys(_config(c) for c in cells if not c.is_base))
    return tuple(Comparison(other, configs[0]) for other in configs[1:])


def pairs(cells: tuple[Cell, ...], comparisons: tuple[Comparison, ...] = ()) -> list[Pair]:
    """Every adapter against its base row, then the matrix's comparisons (or the defaults)."""
    out = [Pair(a, b, "vs base") for a in cells if not a.is_base for b in cells if _is_base_of(b, a)]
    kind = "named" if comparisons else "default"
    for comp in comparisons or default_comparisons(cells):
        out += _pairs_for(comp, cells, kind)
    return list(dict.fromkeys(out))


def _pairs_for(comp: Comparison, cells: tuple[Cell, ...], kind: str) -> list[Pair]:
    out = []
    for a in cells:
        if not _selects(comp.a, a):
            continue
        for b in cells:
            if b is not a and _selects(comp.b, b) and _same_elsewhere(a, b, comp.named):
                out.append(Pair(a, b, kind, comp.margin))
    return out


def _selects(selector, cell: Cell) -> bool:
    values = axis_values(cell)
    return all(_value_of(values, cell, axis) in (want if isinstance(want, tuple) else (want,))
               for axis, want in selector)  # fmt: skip


def _value_of(values: dict, cell: Cell, axis: str):
    return values[axis] if axis in values else registry.AXES[axis].read(cell)


def _same_elsewhere(a: Cell, b: Cell, named: set[str]) -> bool:
    va, vb = axis_values(a), axis_values(b)
    return all(va.get(axis) == vb.get(axis) for axis in va.keys() | vb.keys() if axis not in named)


def _is_base_of(base: Cell, adapter: Cell) -> bool:
    return base.is_base and all(
        getattr(base, f) == getattr(adapter, f) for f in ("model", "task", "gpus", "eval_bits", "eval")
    )


def _config(cell: Cell) -> tuple[tuple[str, object], ...]:
    values = axis_values(cell)
    return tuple((axis, values[axis]) for axis in CONFIG_AXES)
