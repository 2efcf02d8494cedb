"""A JSON Schema for matrix files, built from the definitions the validator uses (bench.core.matrix's
TOP_KEYS, the axis registry bench.core.axes, the fields of ModelSpec, TrainConfig and EvalConfig, the
allowed values in bench.core.cell), so that editors complete and check matrix files. The validator
stays the authority: the schema checks shapes and names (not task names: a user's tasks may have any),
bench.core.matrix also checks ranges across keys.

`python -m bench.core.matrix_schema > matrices/matrix.schema.json` writes it; tests/test_matrix_schema.py
fails when the committed file is not current. Pure.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields

from bench.core import axes as registry
from bench.core.catalog import training_sets
from bench.core.cell import (
    BATCHINGS,
    BITS,
    LOSS_LOGITS,
    OPTIMIZERS,
    PREFIX_REUSE,
    PROMPT_FORMATS,
    SCORERS,
    WEIGHTS,
    EvalConfig,
    ModelSpec,
    TrainConfig,
)
from bench.core.matrix import NAME_RE, TOP_KEYS
from bench.core.methods import METHODS
from bench.core.precision import PRECISIONS
from bench.core.protocols import PROTOCOLS
from bench.core.tracking_spec import BACKENDS

SCHEMA_ID = "https://github.com/bench/matrix.schema.json"
CHOICES = {  # (config class, field) -> its allowed values, where the validator checks a closed set
    ("TrainConfig", "optimizer"): OPTIMIZERS, ("TrainConfig", "precision"): PRECISIONS,
    ("TrainConfig", "loss_logits"): LOSS_LOGITS, ("TrainConfig", "batching"): BATCHINGS,
    ("TrainConfig", "method"): tuple(METHODS), ("TrainConfig", "zero_stage"): (0, 1, 2, 3),
    ("EvalConfig", "scorer"): SCORERS, ("EvalConfig", "protocol"): tuple(PROTOCOLS),
    ("EvalConfig", "precision"): PRECISIONS,
    ("ModelSpec", "weights"): WEIGHTS,
    ("TrainConfig", "prefix_reuse"): PREFIX_REUSE, ("EvalConfig", "prefix_reuse"): PREFIX_REUSE,
}  # fmt: skip
AXIS_VALUES = {
    "model": {"type": "string"},
    "bits": {"enum": list(BITS)},
    "eval_bits": {"enum": list(BITS)},
    "task": {"type": "string", "description": "a training set: " + ", ".join(training_sets())},
    "method": {"enum": list(METHODS)},
    "protocol": {"enum": list(PROTOCOLS)},
    "seed": {"type": "integer", "minimum": 0},
    **{axis: {"type": "integer", "minimum": 1} for axis in ("rank", "gpus", "batch", "nodes")},
    "prompt_format": {"enum": list(PROMPT_FORMATS)},
}
CONFIGS = {"train": TrainConfig, "eval": EvalConfig}


def _axis_values() -> dict:
    """Every name an axis goes by (bench.core.axes: named axes, train.* / eval.* settings, short names)
    -> the schema of one of its values."""
    out = dict(AXIS_VALUES)
    for name in registry.ALL_NAMES:
        axis = registry.AXES[registry.canonical(name)]
        if axis.name in AXIS_VALUES:
            out[name] = AXIS_VALUES[axis.name]
            continue
        where, field = axis.target
        cls = CONFIGS[where]
        type_text = str(next(f.type for f in fields(cls) if f.name == field))
        out[name] = _field_schema(cls.__name__, field, type_text)
    return out


def _field_schema(owner: str, name: str, type_text: str) -> dict:
    """A dataclass field's type annotation (a string under `from __future__ import annotations`)."""
    if (owner, name) in CHOICES:
        out: dict = {"enum": list(CHOICES[owner, name])}
    elif type_text.startswith("tuple"):
        out = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}
    else:
        kind = type_text.split("|")[0].strip()
        out = {"type": {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}[kind]}
    if "None" in type_text:
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def _config_schema(cls, skip=()) -> dict:
    properties = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        properties[f.name] = _field_schema(cls.__name__, f.name, str(f.type))
        default = f.default if f.default is not MISSING else None
        if f.default is not MISSING and default is not None:
            properties[f.name]["default"] = list(default) if isinstance(default, tuple) else default
    return {"type": "object", "properties": properties, "additionalProperties": False}


def _axes_schema() -> dict:
    values = _axis_values()
    lists = {axis: {"type": "array", "items": value, "minItems": 1} for axis, value in values.items()}
    linked = {"type": "array", "minItems": 1, "items": {
        "type": "object", "properties": values, "additionalProperties": False, "minProperties": 1,
    }}  # fmt: skip
    return {"type": "object", "properties": lists, "additionalProperties": linked}


def _when_schema() -> dict:
    value = {"anyOf": [{"type": ["string", "integer", "null"]}, {"type": "array"}]}
    names = {"enum": list(registry.ALL_NAMES)}
    return {"type": "object", "propertyNames": names, "additionalProperties": value}


def schema() -> dict:
    model = _config_schema(ModelSpec, skip=("name",))
    model["required"] = ["source"]
    train, evals = _config_schema(TrainConfig), _config_schema(EvalConfig)
    override = {"type": "object", "required": ["when"], "additionalProperties": False,
                "properties": {"when": _when_schema(), "train": train, "eval": evals}}  # fmt: skip
    side = {"type": "object", "minProperties": 1}
    margin = {"type": "number", "exclusiveMinimum": 0}
    properties = {
        "name": {"type": "string", "pattern": NAME_RE.pattern, "maxLength": 100},
        "description": {"type": "string"},
        "models": {"type": "object", "minProperties": 1, "additionalProperties": model,
                   "propertyNames": {"pattern": NAME_RE.pattern, "maxLength": 64}},  # fmt: skip
        "axes": _axes_schema(),
        "base": {"type": "boolean"},
        "exclude": {"type": "array", "items": {**_when_schema(), "minProperties": 1}},
        "train": train,
        "eval": evals,
        "overrides": {"type": "array", "items": override},
        "deviations": {"type": "array", "items": {"type": "string", "minLength": 1}},
        "compare": {"type": "array", "items": {"type": "object", "required": ["a", "b"],
                    "additionalProperties": False,
                    "properties": {"a": side, "b": side, "margin": margin}}},
        "tasks_dir": {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
                      "description": "folders of your own task files, relative to the matrix"},
        "prompt_format": {"enum": list(PROMPT_FORMATS)},
        "tracking": {"type": "object", "required": ["backend"], "additionalProperties": False,
                     "properties": {"backend": {"enum": list(BACKENDS)}, "uri": {"type": "string"}}},
    }  # fmt: skip
    assert set(properties) == set(TOP_KEYS), "a top-level key of the matrix has no schema entry"
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "bench matrix file",
        "description": "Generated by `python -m bench.core.matrix_schema` (bench.core.matrix): do not edit",
        "type": "object",
        "required": ["models", "axes"],
        "properties": properties,
        "additionalProperties": False,
    }


def text() -> str:
    return json.dumps(schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(text(), end="")
