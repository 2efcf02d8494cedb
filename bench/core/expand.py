"""A matrix's axes -> the value combinations -> Cells, through the axis registry (bench.core.axes).
Pure (no torch). Errors go through the matrix's context (ctx.fail(key, fix)), naming the key and fix.
"""

from __future__ import annotations

import difflib
import itertools

from bench.core import axes as registry
from bench.core.cell import Cell


def axis_name(ctx, name, key: str) -> str:
    """The canonical name of an axis as a matrix writes it (`lr` -> train.lr); an unknown one fails."""
    canonical = registry.canonical(name) if isinstance(name, str) else None
    if canonical is None:
        close = difflib.get_close_matches(str(name), registry.ALL_NAMES, n=1)
        hint = (
            f"did you mean '{close[0]}'?"
            if close
            else "an axis is one of: "
            + ", ".join(a for a in registry.AXES if "." not in a)
            + ", or any train.* / eval.* / lora.* setting"
        )
        ctx.fail(key, f"unknown key; {hint}")
    return canonical


def canonical_keys(ctx, mapping: dict, prefix: str) -> dict:
    return {axis_name(ctx, k, f"{prefix}{k}"): v for k, v in mapping.items()}


def combinations(ctx, raw) -> tuple[list[dict], tuple[str, ...]]:
    """Every combination of the axes' values ({canonical axis: value}), and the axes the matrix names."""
    if not isinstance(raw, dict):
        ctx.fail("axes", "give the axes as a mapping: model, bits, rank, task (gpus, eval_bits optional)")
    groups: list[list[dict]] = []
    seen: list[str] = []
    for name, values in raw.items():
        if not isinstance(values, list) or not values:
            ctx.fail(f"axes.{name}", "must be a non-empty list")
        linked = all(isinstance(v, dict) for v in values)
        if linked:  # a linked axis: its entries' values move together
            options = [canonical_keys(ctx, entry, f"axes.{name}[{i}].") for i, entry in enumerate(values)]
            names = list(options[0])
            for i, entry in enumerate(options):
                if set(entry) != set(names):
                    ctx.fail(
                        f"axes.{name}[{i}]",
                        f"every entry of a linked axis needs the same keys {sorted(names)}",
                    )
        else:
            names = [axis_name(ctx, name, f"axes.{name}")]
            options = [{names[0]: v} for v in values]
        for axis in names:
            if axis in seen:
                ctx.fail(f"axes.{name}", f"axis {axis!r} is given twice")
            for i, option in enumerate(options):
                _check(ctx, axis, option[axis], f"axes.{name}" + (f"[{i}].{axis}" if linked else ""))
                option[axis] = registry.AXES[axis].convert(option[axis])
        seen += names
        groups.append(options)
    for axis in registry.AXES.values():
        if axis.name not in seen and axis.required:
            ctx.fail("axes", f"missing axis '{axis.name}'")
        if axis.name not in seen and axis.default is not None:
            groups.append([{axis.name: axis.default}])
    combos = [{k: v for part in choice for k, v in part.items()} for choice in itertools.product(*groups)]
    return combos, tuple(seen)


def _check(ctx, axis: str, value, key: str) -> None:
    problem = registry.AXES[axis].check(value)
    if problem:
        ctx.fail(key, problem)


def apply(values: dict, train: dict, evals: dict, named: tuple[str, ...]) -> tuple[dict, str, tuple]:
    """Set each axis's value on the cell's settings; return the cell fields, the id's variant parts
    (in the order ids have always had them) and the axis values the cell carries."""
    base = values["bits"] is None
    cell_fields, parts, carried = {}, [], []
    for axis in _in_id_order(values, named):
        spec, value = registry.AXES[axis], values[axis]
        if spec.training and base:  # a base row has no training: one row whatever the value
            carried.append((axis, None))
            continue
        where, field = spec.target
        if where == "cell":
            cell_fields[field] = value
        else:
            (train if where == "train" else evals)[field] = value
        if spec.id_part and (part := spec.id_part(value)):
            parts.append(part)
        carried.append((axis, value))
    return cell_fields, parts, tuple(carried)


def _in_id_order(values: dict, named: tuple[str, ...]) -> list[str]:
    """batch, seed, then setting axes in the matrix's order, then the rest: the ids' historic order."""
    first = [a for a in ("batch", "seed") if a in values]
    settings = [a for a in named if "." in a]
    rest = [a for a in values if a not in first and a not in settings]
    return first + settings + rest


def build_cell(model, values: dict, train, evals, cell_fields: dict, variant: str, carried) -> Cell:
    return Cell(
        model=model,
        task=values["task"],
        bits=values["bits"],
        rank=values["rank"],
        gpus=cell_fields["gpus"],
        eval_bits=cell_fields["eval_bits"],
        train=train,
        eval=evals,
        variant=variant,
        nodes=cell_fields.get("nodes", 1),
        prompt_format=cell_fields.get("prompt_format", "raw"),
        axes=carried,
    )
