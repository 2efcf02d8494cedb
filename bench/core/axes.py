"""The registry of axes: one entry per thing a matrix can sweep. Pure (no torch).

An entry says how its values are checked, which field of the cell it sets, how it names the cell (a
part of the id, where it has one), how the report labels it, and whether a base row (no training)
ignores it. Besides the named axes below, every setting of TrainConfig and EvalConfig is an axis:
`train.lr`, `eval.limit`, ..., with short names where they are unambiguous (`lr`, `lora_alpha`) and
`lora.alpha` / `lora.dropout` / `lora.target_modules` for the LoRA settings.

Keys stay stable: an axis that sets a TrainConfig/EvalConfig field changes the key exactly as the same
value written under `train:`/`eval:` does (plus the id part it adds); a matrix that does not use an
axis gets no id part from it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields

from bench.core.cell import BITS, PROMPT_FORMATS, Cell, EvalConfig, TrainConfig


@dataclass(frozen=True)
class Axis:
    name: str  # canonical name, as matrices, `compare`, `exclude` and `when` write it
    label: str  # how the report names it
    target: tuple[str, str]  # ("cell" | "train" | "eval", field) that a value sets
    check: Callable[[object], str | None]  # a value -> what is wrong with it (None: fine)
    id_part: Callable[[object], str] | None = None  # the value's part of a cell id, if any
    training: bool = False  # a setting of the training: a base row has none
    default: object = None  # used when the matrix does not name the axis (None: absent)
    required: bool = False
    convert: Callable[[object], object] = staticmethod(lambda value: value)  # a checked value -> the setting

    def read(self, cell: Cell):
        """The cell's value of this axis, from the setting it sets (None on a base row's training axis)."""
        where, name = self.target
        if where == "cell":
            return getattr(cell, name)
        config = cell.train if where == "train" else cell.eval
        return None if config is None else getattr(config, name)


def _positive_int(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return f"{value!r} must be a positive whole number"
    return None


def _one_of(allowed) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        if isinstance(value, bool) or not isinstance(value, type(allowed[0])) or value not in allowed:
            return f"{value!r} is not one of {', '.join(map(str, allowed))}"
        return None

    return check


def _name(kind: str) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        if not isinstance(value, str) or not value:
            return f"{value!r} must be a {kind} name (a string), e.g. [a, b] not [[a, b]]"
        return None

    return check


def _seed(value) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return f"{value!r} must be a whole number >= 0, e.g. seed: [1, 2]"
    return None


def _known_method(value) -> str | None:
    import difflib

    from bench.core.methods import METHODS

    problem = _name("LoRA method")(value)
    if problem or value in METHODS:
        return problem
    close = difflib.get_close_matches(value, list(METHODS), n=1)
    hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(METHODS)}"
    return f"unknown LoRA method {value!r}; {hint}"


NAMED: tuple[Axis, ...] = (
    Axis("model", "model", ("cell", "model"), _name("model"), required=True),
    Axis("bits", "bits", ("cell", "bits"), _one_of(BITS), required=True),
    Axis("rank", "rank", ("cell", "rank"), _positive_int, required=True),
    Axis("task", "task", ("cell", "task"), _name("task"), required=True),
    Axis("gpus", "GPUs", ("cell", "gpus"), _positive_int, default=1),
    Axis("eval_bits", "eval bits", ("cell", "eval_bits"), _one_of(BITS), default=8),
    Axis("batch", "batch", ("train", "batch_per_gpu"), _positive_int, lambda v: f"b{v}", training=True),
    Axis("seed", "seed", ("train", "seed"), _seed, lambda v: f"s{v}", training=True),
    # named by the configuration label ("4bit-r4-dora"), not by an id part
    Axis("method", "method", ("train", "method"), _known_method, training=True),
    # named by bench.core.matrix.with_protocol ("...__finlora-2024"), which also fills its eval batch
    Axis("protocol", "protocol", ("eval", "protocol"), _name("protocol")),
    Axis("nodes", "nodes", ("cell", "nodes"), _positive_int),  # named "__2nodes" by Cell.id
    Axis(
        "prompt_format",
        "prompt format",
        ("cell", "prompt_format"),
        _one_of(PROMPT_FORMATS),
        lambda v: "" if v == "raw" else v,
    ),
)
LORA_ALIASES = {
    "lora.alpha": "lora_alpha",
    "lora.dropout": "lora_dropout",
    "lora.target_modules": "target_modules",
}
_ID_SAFE = re.compile(r"[^A-Za-z0-9.+-]")


def _setting_axes() -> dict[str, Axis]:
    """train.<field> and eval.<field> for every setting a named axis does not already cover."""
    covered = {a.target for a in NAMED}
    out = {}
    for where, cls in (("train", TrainConfig), ("eval", EvalConfig)):
        for f in fields(cls):
            if (where, f.name) in covered:
                continue
            name = f"{where}.{f.name}"
            type_text = str(f.type)
            out[name] = Axis(
                name,
                f.name.replace("_", " "),
                (where, f.name),
                _setting_check(type_text),
                _setting_id(f.name),
                training=where == "train",
                convert=lambda value, t=type_text: convert_setting(t, value),
            )
    return out


def _setting_check(type_text: str) -> Callable[[object], str | None]:
    def check(value) -> str | None:
        return setting_problem(type_text, value)

    return check


def setting_problem(type_text: str, value) -> str | None:
    """What is wrong with a value for a setting of this annotated type (None: fine)."""
    if value is None:
        return None if "None" in type_text else "must not be empty"
    if type_text.startswith("tuple"):
        ok = isinstance(value, list | tuple) and value and all(isinstance(v, str) and v for v in value)
        return None if ok else "must be a list of names, e.g. [q_proj, k_proj, v_proj]"
    expected = type_text.split("|")[0].strip()
    if expected == "float":
        number = _number(value)
        if number is None:
            return f"must be a number, not {value!r}"
        return None if math.isfinite(number) else f"must be a finite number, not {value!r}"
    if expected == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be a whole number, not {value!r}"
    if expected == "bool" and not isinstance(value, bool):
        return f"must be true or false, not {value!r}"
    if expected == "str" and not isinstance(value, str):
        return f"must be a string, not {value!r}"
    return None


def _number(value) -> float | None:
    """A float setting's value: a number, or a string YAML 1.1 leaves unparsed ("2e-4": PyYAML reads
    exponents without a dot as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value) if isinstance(value, str) else None
    except ValueError:
        return None


def convert_setting(type_text: str, value):
    """A checked value as the setting holds it: floats as float, lists as tuples."""
    if value is None:
        return None
    if type_text.startswith("tuple"):
        return tuple(value)
    return _number(value) if type_text.split("|")[0].strip() == "float" else value


def _setting_id(short: str) -> Callable[[object], str]:
    def part(value) -> str:
        text = "+".join(value) if isinstance(value, list | tuple) else str(value)
        return _ID_SAFE.sub("_", f"{short}{text}")

    return part


AXES: dict[str, Axis] = {**{a.name: a for a in NAMED}, **_setting_axes()}


def _aliases() -> dict[str, str]:
    """Short names: `lr` for train.lr, where no other axis or setting has that name; lora.* names."""
    counts: dict[str, int] = {}
    for name in AXES:
        if "." in name:
            short = name.split(".", 1)[1]
            counts[short] = counts.get(short, 0) + 1
    out = {n.split(".", 1)[1]: n for n in AXES if "." in n and counts[n.split(".", 1)[1]] == 1}
    out = {short: full for short, full in out.items() if short not in AXES}
    out.update({alias: f"train.{field}" for alias, field in LORA_ALIASES.items()})
    return out


ALIASES = _aliases()
ALL_NAMES = tuple(AXES) + tuple(ALIASES)


def canonical(name: str) -> str | None:
    """An axis's canonical name from any of its names; None for no axis."""
    if name in AXES:
        return name
    return ALIASES.get(name)
