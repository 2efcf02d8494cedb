"""Load and validate a matrix YAML and expand it into Cells. Pure (no torch).

Format (see matrices/*.yaml):
  name, description
  models:    {short-name: {source, weights, revision, trust_remote_code}}
  axes:      model, bits, rank, task, gpus, eval_bits, batch (per GPU; sets train.batch_per_gpu over
             any default or override and names the cell "...__b8"), seed (sets train.seed, names the cell
             "...__s1"), method (lora | dora | rslora: sets train.method, names the configuration
             "4bit-r4-dora"), protocol (sets eval.protocol), nodes (machines a training spans, gpus
             split evenly over them; default 1; needs `--executor ray`): lists of values.
             A list of mappings under any other name is a linked axis: its values move together, e.g.
             quant: [{bits: 4, rank: 4}, {bits: 8, rank: 8}]
  base:      true adds base-model rows (no adapter, evaluation only)
  exclude:   [{axis: value-or-list, ...}]: drop cells matching every key
  train, eval: defaults; overrides: [{when: {axis: value-or-list}, train: {...}, eval: {...}}]
  deviations: [sentence, ...]: where the matrix departs from the source it reproduces, and why
  compare:   [{a: {axis: value}, b: {axis: value}, margin: points}]: the pairs the report tests
             (bench.core.comparisons); margin asks an equivalence question
"""

from __future__ import annotations

import difflib
import itertools
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from bench.core.catalog import TRAINING_SETS
from bench.core.cell import (
    BATCHINGS,
    BITS,
    LOSS_LOGITS,
    OPTIMIZERS,
    PRECISIONS,
    SCORERS,
    WEIGHTS,
    Cell,
    EvalConfig,
    ModelSpec,
    TrainConfig,
)
from bench.core.comparisons import Comparison, parse_comparisons, unmatched
from bench.core.matrix_file import MatrixError, check_file_names, read_yaml
from bench.core.methods import METHODS
from bench.models.sources import source_of

AXES = ("model", "bits", "rank", "task", "gpus", "eval_bits", "batch", "seed", "method", "protocol", "nodes")
# absent: the settings decide, and cell ids carry no variant
OPTIONAL_AXES = ("batch", "seed", "method", "protocol", "nodes")
TOP_KEYS = (
    "name", "description", "models", "axes", "base", "exclude", "train", "eval", "overrides", "deviations",
    "compare",
)  # fmt: skip
MODEL_KEYS = tuple(f.name for f in fields(ModelSpec) if f.name != "name")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Matrix:
    name: str
    description: str
    path: Path
    cells: tuple[Cell, ...]
    # Where the matrix departs from the source it reproduces, each with its reason: shown in the report.
    deviations: tuple[str, ...] = ()
    comparisons: tuple[Comparison, ...] = ()  # the matrix's `compare` (empty: the report's defaults)


def load(path: str | Path) -> Matrix:
    path = Path(path)
    raw = read_yaml(path)
    matrix = parse(raw, path)
    check_file_names(path, matrix.name, matrix.cells)
    return matrix


def parse(raw, path: Path) -> Matrix:
    ctx = _Context(path)
    if not isinstance(raw, dict):
        ctx.fail("", "the file must be a mapping with keys like 'models', 'axes', 'train'")
    ctx.check_keys(raw, TOP_KEYS, "")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        ctx.fail("name", "use letters, digits, '.', '_' or '-'")
    models = _models(ctx, raw.get("models"))
    combos = _combinations(ctx, raw.get("axes"))
    train_defaults = _config(ctx, TrainConfig, raw.get("train", {}), "train")
    eval_defaults = _config(ctx, EvalConfig, raw.get("eval", {}), "eval")
    overrides = _overrides(ctx, raw.get("overrides", []))
    excludes = _excludes(ctx, raw.get("exclude", []))
    base = raw.get("base", False)
    if not isinstance(base, bool):
        ctx.fail("base", "must be true or false")

    cells: dict[str, Cell] = {}
    for combo in combos:
        _check_values(ctx, combo, models)
        rows = [combo] + ([{**combo, "bits": None, "rank": None}] if base else [])
        for values in rows:
            if any(_matches(rule, values) for rule in excludes):
                continue
            cell = _cell(ctx, values, models, train_defaults, eval_defaults, overrides)
            cells.setdefault(cell.key, cell)
    if not cells:
        ctx.fail("exclude", "every cell is excluded; loosen 'exclude'")
    deviations = raw.get("deviations", [])
    if not isinstance(deviations, list) or not all(isinstance(d, str) and d.strip() for d in deviations):
        ctx.fail("deviations", "must be a list of sentences: the setting, the source's value, ours and why")
    comparisons = parse_comparisons(raw.get("compare", []), AXES, ctx)
    for i in unmatched(comparisons, tuple(cells.values())):
        ctx.fail(f"compare[{i}]", "pairs no two cells: a and b must select cells that differ only in the "
                 "axes they name (same model, task, seed...); check the values against the axes")  # fmt: skip
    return Matrix(
        name=name, description=str(raw.get("description", "")), path=path, cells=tuple(cells.values()),
        deviations=tuple(deviations), comparisons=comparisons,
    )  # fmt: skip


class _Context:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, fix: str):
        where = f" key '{key}'" if key else ""
        raise MatrixError(f"{self.path}:{where}: {fix}")

    def check_keys(self, mapping: dict, allowed, prefix: str):
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
                self.fail(f"{prefix}{key}", f"unknown key; {hint}")


def _models(ctx: _Context, raw) -> dict[str, ModelSpec]:
    if not isinstance(raw, dict) or not raw:
        ctx.fail("models", "give at least one model, e.g. models: {tiny: {source: tiny}}")
    out = {}
    for name, spec in raw.items():
        key = f"models.{name}"
        if not isinstance(name, str) or not NAME_RE.match(name):
            ctx.fail(key, "model names use letters, digits, '.', '_' or '-'")
        if not isinstance(spec, dict) or "source" not in spec:
            ctx.fail(key, "needs 'source': tiny, a hub id (org/name) or a local directory")
        ctx.check_keys(spec, MODEL_KEYS, f"{key}.")
        if spec.get("weights", "pretrained") not in WEIGHTS:
            ctx.fail(f"{key}.weights", f"must be one of {', '.join(WEIGHTS)}")
        _check_source(ctx, key, spec)
        out[name] = ModelSpec(name=name, **spec)
    return out


def _check_source(ctx: _Context, key: str, spec: dict) -> None:
    source = spec["source"]
    if not isinstance(source, str) or not source:
        ctx.fail(f"{key}.source", "must be a non-empty string")
    weights = spec.get("weights", "pretrained")
    problem = source_of(source, weights).check(source, weights, ctx.path.parent)
    if problem:
        field, fix = problem
        ctx.fail(f"{key}.{field}", fix)


def _combinations(ctx: _Context, raw) -> list[dict]:
    if not isinstance(raw, dict):
        ctx.fail("axes", "give the axes as a mapping: model, bits, rank, task (gpus, eval_bits optional)")
    groups: list[list[dict]] = []
    seen: set[str] = set()
    for name, values in raw.items():
        if not isinstance(values, list) or not values:
            ctx.fail(f"axes.{name}", "must be a non-empty list")
        if all(isinstance(v, dict) for v in values):  # a linked axis
            linked = set(values[0])
            for i, entry in enumerate(values):
                ctx.check_keys(entry, AXES, f"axes.{name}[{i}].")
                if set(entry) != linked:
                    ctx.fail(
                        f"axes.{name}[{i}]",
                        f"every entry of a linked axis needs the same keys {sorted(linked)}",
                    )
            names, options = linked, values
        else:
            ctx.check_keys({name: None}, AXES, "axes.")
            names, options = {name}, [{name: v} for v in values]
        if names & seen:
            ctx.fail(f"axes.{name}", f"axis {sorted(names & seen)} is given twice")
        seen |= names
        groups.append(options)
    defaults = {"gpus": [{"gpus": 1}], "eval_bits": [{"eval_bits": 8}]}
    for axis in AXES:
        if axis not in seen and axis not in OPTIONAL_AXES:
            if axis not in defaults:
                ctx.fail("axes", f"missing axis '{axis}'")
            groups.append(defaults[axis])
    return [{k: v for part in choice for k, v in part.items()} for choice in itertools.product(*groups)]


def _check_values(ctx: _Context, combo: dict, models: dict) -> None:
    if combo["model"] not in models:
        close = difflib.get_close_matches(str(combo["model"]), list(models), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"define it under 'models' ({', '.join(models)})"
        ctx.fail("axes.model", f"unknown model {combo['model']!r}; {hint}")
    if combo["task"] not in TRAINING_SETS:
        close = difflib.get_close_matches(str(combo["task"]), list(TRAINING_SETS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(TRAINING_SETS)}"
        ctx.fail("axes.task", f"unknown task {combo['task']!r}; {hint}")
    for axis, allowed in (("bits", BITS), ("eval_bits", BITS)):
        if combo[axis] not in allowed or isinstance(combo[axis], bool):
            ctx.fail(f"axes.{axis}", f"{combo[axis]!r} is not one of {', '.join(map(str, allowed))}")
    for axis in ("rank", "gpus", "batch", "nodes"):
        if axis not in combo:
            continue
        if not isinstance(combo[axis], int) or isinstance(combo[axis], bool) or combo[axis] <= 0:
            ctx.fail(f"axes.{axis}", f"{combo[axis]!r} must be a positive whole number")
    if "seed" in combo and (not isinstance(combo["seed"], int) or isinstance(combo["seed"], bool)
                            or combo["seed"] < 0):  # fmt: skip
        ctx.fail("axes.seed", f"{combo['seed']!r} must be a whole number >= 0, e.g. seed: [1, 2]")
    if "method" in combo:
        _check_method(ctx, "axes.method", combo["method"])
    if combo["gpus"] % combo.get("nodes", 1):
        ctx.fail(
            "axes.nodes",
            f"gpus {combo['gpus']} do not split evenly over {combo['nodes']} nodes; "
            "use a gpus value that is a multiple of nodes (e.g. gpus: 8, nodes: 2 = 4 per node)",
        )


def _check_method(ctx: _Context, key: str, method) -> None:
    if method not in METHODS:
        close = difflib.get_close_matches(str(method), list(METHODS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"use one of {', '.join(METHODS)}"
        ctx.fail(key, f"unknown LoRA method {method!r}; {hint}")


def _config(ctx: _Context, cls, raw, prefix: str):
    if not isinstance(raw, dict):
        ctx.fail(prefix, "must be a mapping of settings")
    allowed = tuple(f.name for f in fields(cls))
    ctx.check_keys(raw, allowed, f"{prefix}.")
    types = {f.name: f.type for f in fields(cls)}
    values = {}
    for key, value in raw.items():
        values[key] = _coerce(ctx, f"{prefix}.{key}", types[key], value)
    return values


def _coerce(ctx: _Context, key: str, type_text: str, value):
    optional = "None" in type_text
    if value is None:
        if optional:
            return None
        ctx.fail(key, "must not be empty")
    if type_text.startswith("tuple"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            ctx.fail(key, "must be a list of names, e.g. [q_proj, k_proj, v_proj]")
        return tuple(value)
    expected = type_text.split("|")[0].strip()
    checks = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    if not checks[expected](value):
        ctx.fail(key, f"must be {'a whole number' if expected == 'int' else 'a ' + expected}, not {value!r}")
    return float(value) if expected == "float" else value


def _overrides(ctx: _Context, raw) -> list[tuple[dict, dict, dict]]:
    if not isinstance(raw, list):
        ctx.fail("overrides", "must be a list of {when: {...}, train: {...}, eval: {...}}")
    out = []
    for i, entry in enumerate(raw):
        key = f"overrides[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("when"), dict):
            ctx.fail(key, "each override needs 'when': {axis: value or list}")
        ctx.check_keys(entry, ("when", "train", "eval"), f"{key}.")
        ctx.check_keys(entry["when"], AXES, f"{key}.when.")
        train = _config(ctx, TrainConfig, entry.get("train", {}), f"{key}.train")
        evals = _config(ctx, EvalConfig, entry.get("eval", {}), f"{key}.eval")
        out.append((entry["when"], train, evals))
    return out


def _excludes(ctx: _Context, raw) -> list[dict]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) and r for r in raw):
        ctx.fail("exclude", "must be a list of non-empty mappings like {model: x, bits: 16}")
    for i, rule in enumerate(raw):
        ctx.check_keys(rule, AXES, f"exclude[{i}].")
    return raw


def _matches(rule: dict, values: dict) -> bool:
    return all(values.get(k) in (v if isinstance(v, list) else [v]) for k, v in rule.items())


def _cell(ctx, values, models, train_defaults, eval_defaults, overrides) -> Cell:
    train, evals = dict(train_defaults), dict(eval_defaults)
    for when, train_over, eval_over in overrides:
        if _matches(when, values):
            train.update(train_over)
            evals.update(eval_over)
    base = values["bits"] is None
    parts = []
    if "batch" in values and not base:  # a base row has no training: one row whatever the batch
        train["batch_per_gpu"] = values["batch"]
        parts.append(f"b{values['batch']}")
    if "method" in values and not base:  # named by config_label ("4bit-r4-dora"), not the variant
        train["method"] = values["method"]
    if "seed" in values and not base:
        train["seed"] = values["seed"]
        parts.append(f"s{values['seed']}")
    if "protocol" in values:
        evals["protocol"] = values["protocol"]
    variant = with_protocol(ctx, evals, values, "__".join(parts))
    train_config = None if base else _validated_train(ctx, TrainConfig(**train), values)
    eval_config = _validated_eval(ctx, EvalConfig(**evals))
    return Cell(
        model=models[values["model"]],
        task=values["task"],
        bits=values["bits"],
        rank=values["rank"],
        gpus=values["gpus"],
        eval_bits=values["eval_bits"],
        train=train_config,
        eval=eval_config,
        variant=variant,
        nodes=values.get("nodes", 1),
    )


def _validated_train(ctx: _Context, config: TrainConfig, values: dict) -> TrainConfig:
    where = f"{values['model']}/{values['task']}"
    if config.optimizer not in OPTIMIZERS:
        ctx.fail("train.optimizer", f"{config.optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
    if config.precision not in PRECISIONS:
        ctx.fail("train.precision", f"{config.precision!r} is not one of {', '.join(PRECISIONS)}")
    _check_method(ctx, "train.method", config.method)
    if config.loss_logits not in LOSS_LOGITS:
        ctx.fail("train.loss_logits", f"{config.loss_logits!r} is not one of {', '.join(LOSS_LOGITS)}")
    if config.batching not in BATCHINGS:
        ctx.fail("train.batching", f"{config.batching!r} is not one of {', '.join(BATCHINGS)}")
    if config.zero_stage not in (0, 1, 2, 3):
        ctx.fail("train.zero_stage", "must be 0, 1, 2 or 3")
    if config.optimizer == "zero_one_adam" and config.zero_stage > 0:
        ctx.fail("train.zero_stage", f"0/1 Adam refuses ZeRO > 0 (cell {where}); use zero_stage: 0 or adamw")
    positive = ("batch_per_gpu", "grad_accum", "max_seq_len", "lora_alpha")
    for name in positive + ("max_steps", "train_limit", "time_limit_s"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            ctx.fail(f"train.{name}", f"must be positive, not {value} (cell {where})")
    if config.epochs <= 0 or config.lr <= 0 or not 0 <= config.lora_dropout < 1:
        ctx.fail("train", f"epochs and lr must be positive and lora_dropout in [0, 1) (cell {where})")
    return replace(config)


def _validated_eval(ctx: _Context, config: EvalConfig) -> EvalConfig:
    if config.scorer not in SCORERS:
        ctx.fail("eval.scorer", f"{config.scorer!r} is not one of {', '.join(SCORERS)}")
    for name in ("limit", "batch_size", "max_new_tokens", "time_limit_s"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            ctx.fail(f"eval.{name}", f"must be positive, not {value}")
    if config.bootstrap < 0:
        ctx.fail("eval.bootstrap", "must be 0 (off) or a positive number of resamples")
    return config


def with_protocol(ctx: _Context, evals: dict, values: dict, variant: str) -> str:
    """Check the cell's evaluation protocol, fill the source's eval batch where the matrix sets none,
    and name a non-default protocol in the cell id ("...__finlora-2024")."""
    from bench.core.protocols import DEFAULT_PROTOCOL, PROTOCOLS

    name = evals.get("protocol", DEFAULT_PROTOCOL)
    if name not in PROTOCOLS:
        close = difflib.get_close_matches(str(name), list(PROTOCOLS), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(PROTOCOLS)}"
        ctx.fail(
            "axes.protocol" if "protocol" in values else "eval.protocol", f"unknown protocol {name!r}; {hint}"
        )
    if evals.get("seed") is not None and (not isinstance(evals["seed"], int) or evals["seed"] < 0):
        ctx.fail("eval.seed", "must be a whole number >= 0 (the sampling seed)")
    if name == DEFAULT_PROTOCOL:
        return variant
    if "batch_size" not in evals:
        batch = PROTOCOLS[name].batch_size(str(values["model"]), values["task"])
        evals["batch_size"] = batch if batch else evals.get("batch_size", 8)
    return f"{variant}__{name}" if variant else name
