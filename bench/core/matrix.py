"""Load and validate a matrix YAML and expand it into Cells. Pure (no torch).

Format (see matrices/*.yaml):
  name, description
  models:    {short-name: {source, weights, revision, trust_remote_code}}
  axes:      any axis of the registry (bench.core.axes: model, bits, rank, task, gpus, eval_bits, batch,
             seed, method, protocol, nodes, prompt_format, and every train.* / eval.* / lora.* setting,
             e.g. lr or lora.alpha): lists of values. A list of mappings under any other name is a
             linked axis: its values move together, e.g. quant: [{bits: 4, rank: 4}, {bits: 8, rank: 8}]
  tasks_dir: a folder (or list) of the user's own task files, relative to this file (bench.core.tasks)
  prompt_format: raw (default: the row's context as it is) | chat (the tokenizer's chat template, in
             training and evaluation; refused for a model whose tokenizer has none), or an axis
  base:      true adds base-model rows (no adapter, evaluation only)
  exclude:   [{axis: value-or-list, ...}]: drop cells matching every key
  train, eval: defaults; overrides: [{when: {axis: value-or-list}, train: {...}, eval: {...}}]
  deviations: [sentence, ...]: where the matrix departs from the source it reproduces, and why
  compare:   [{a: {axis: value}, b: {axis: value}, margin: points}]: the pairs the report tests
             (bench.core.comparisons); margin asks an equivalence question
  tracking:  {backend: mlflow | wandb, uri: ...}: also log the records there (bench.tracking)
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path

from bench.core import axes as axis_registry
from bench.core import expand
from bench.core.catalog import training_sets
from bench.core.cell import (
    BATCHINGS,
    LOSS_LOGITS,
    OPTIMIZERS,
    PREFIX_REUSE,
    PROMPT_FORMATS,
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
from bench.core.precision import PRECISIONS
from bench.core.tracking_spec import TrackingSpec, TrackingSpecError, parse_mapping
from bench.models.chat_templates import chat_refusal
from bench.models.sources import source_of

TOP_KEYS = (
    "name", "description", "models", "axes", "base", "exclude", "train", "eval", "overrides", "deviations",
    "compare", "tasks_dir", "prompt_format", "tracking",
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
    axes: tuple[str, ...] = ()  # the axes the matrix names (canonical names, bench.core.axes)
    tracking: TrackingSpec | None = None  # the matrix's `tracking` (bench.tracking); never in a cell's key


def load(path: str | Path, sets: dict | None = None, tasks_dirs: tuple[Path, ...] = ()) -> Matrix:
    path = Path(path)
    raw = read_yaml(path)
    matrix = parse(raw, path, sets, tasks_dirs)
    check_file_names(path, matrix.name, matrix.cells)
    return matrix


def parse(raw, path: Path, sets: dict | None = None, tasks_dirs: tuple[Path, ...] = ()) -> Matrix:
    """A validated Matrix. `sets` are command-line overrides ({"train.lr": 2e-4}: every cell gets them);
    `tasks_dirs` are extra task folders (--tasks-dir) beside the matrix's own `tasks_dir`."""
    ctx = _Context(path)
    if not isinstance(raw, dict):
        ctx.fail("", "the file must be a mapping with keys like 'models', 'axes', 'train'")
    ctx.check_keys(raw, TOP_KEYS, "")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        ctx.fail("name", "use letters, digits, '.', '_' or '-'")
    task_files = user_tasks(ctx, raw.get("tasks_dir"), tasks_dirs)
    models = _models(ctx, raw.get("models"))
    combos, named = expand.combinations(ctx, _with_prompt_format(ctx, raw))
    defaults = (_config(ctx, TrainConfig, raw.get("train", {}), "train"),
                _config(ctx, EvalConfig, raw.get("eval", {}), "eval"))  # fmt: skip
    overrides = _overrides(ctx, raw.get("overrides", [])) + _command_line(ctx, sets or {}, named)
    excludes = _excludes(ctx, raw.get("exclude", []))
    base = raw.get("base", False)
    if not isinstance(base, bool):
        ctx.fail("base", "must be true or false")
    cells: dict[str, Cell] = {}
    for combo in combos:
        _check_values(ctx, combo, models)
        for values in [combo] + ([{**combo, "bits": None, "rank": None}] if base else []):
            if not any(_matches(rule, values) for rule in excludes):
                cell = _cell(ctx, values, models, defaults, overrides, named, task_files)
                cells.setdefault(cell.key, cell)
    if not cells:
        ctx.fail("exclude", "every cell is excluded; loosen 'exclude'")
    check_chat_templates(ctx, cells.values())
    return Matrix(
        name=name, description=str(raw.get("description", "")), path=path, cells=tuple(cells.values()),
        deviations=_deviations(ctx, raw), comparisons=_comparisons(ctx, raw, tuple(cells.values())),
        axes=named, tracking=_tracking(ctx, raw.get("tracking")),
    )  # fmt: skip


def check_chat_templates(ctx: _Context, cells) -> None:
    """prompt_format chat needs the model's chat template: refused here, before anything loads."""
    for spec in dict.fromkeys(c.model for c in cells if c.prompt_format == "chat"):
        reason = chat_refusal(spec, ctx.path.parent)
        if reason:
            ctx.fail("prompt_format", reason)


def _with_prompt_format(ctx, raw: dict):
    """The axes, with a top-level `prompt_format: chat` as a one-value axis (it is one setting of all)."""
    axes = raw.get("axes")
    if "prompt_format" not in raw:
        return axes
    if raw["prompt_format"] not in PROMPT_FORMATS:
        ctx.fail("prompt_format", f"{raw['prompt_format']!r} is not one of {', '.join(PROMPT_FORMATS)}")
    if isinstance(axes, dict) and "prompt_format" in axes:
        ctx.fail("prompt_format", "is also an axis; give it in one place")
    return {**axes, "prompt_format": [raw["prompt_format"]]} if isinstance(axes, dict) else axes


def _deviations(ctx, raw: dict) -> tuple[str, ...]:
    deviations = raw.get("deviations", [])
    if not isinstance(deviations, list) or not all(isinstance(d, str) and d.strip() for d in deviations):
        ctx.fail("deviations", "must be a list of sentences: the setting, the source's value, ours and why")
    return tuple(deviations)


def _comparisons(ctx, raw: dict, cells: tuple[Cell, ...]) -> tuple[Comparison, ...]:
    comparisons = parse_comparisons(raw.get("compare", []), ctx)
    for i in unmatched(comparisons, cells):
        ctx.fail(f"compare[{i}]", "pairs no two cells: a and b must select cells that differ only in the "
                 "axes they name (same model, task, seed...); check the values against the axes")  # fmt: skip
    return comparisons


def _tracking(ctx: _Context, raw) -> TrackingSpec | None:
    if raw is None:
        return None
    try:
        return parse_mapping(raw)
    except TrackingSpecError as exc:
        ctx.fail("tracking", str(exc))


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


def _check_values(ctx: _Context, combo: dict, models: dict) -> None:
    if combo["model"] not in models:
        close = difflib.get_close_matches(str(combo["model"]), list(models), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"define it under 'models' ({', '.join(models)})"
        ctx.fail("axes.model", f"unknown model {combo['model']!r}; {hint}")
    sets = training_sets()
    if combo["task"] not in sets:
        close = difflib.get_close_matches(str(combo["task"]), list(sets), n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(sets)}"
        ctx.fail("axes.task", f"unknown task {combo['task']!r}; {hint} (a task of your own: tasks_dir)")
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


def user_tasks(ctx: _Context, raw, extra: tuple[Path, ...]) -> dict:
    """Register the task files of `tasks_dir` (relative to the matrix file) and --tasks-dir folders;
    {task name: TaskFile} for the cells that use them."""
    from bench.core.task_content import register_folders

    folders = [raw] if isinstance(raw, str) else raw or []
    if not isinstance(folders, list) or not all(isinstance(r, str) and r for r in folders):
        ctx.fail("tasks_dir", "a folder (or a list of folders) of task files, relative to this matrix")
    folders = [ctx.path.parent / r for r in folders] + list(extra)
    try:
        return register_folders(folders)
    except Exception as exc:  # TaskError / DataError: already names the file, the key and the fix
        if type(exc).__name__ not in ("TaskError", "DataError"):
            raise
        raise MatrixError(f"{ctx.path}: key 'tasks_dir': {exc}") from exc


def _command_line(ctx: _Context, sets: dict, named: tuple[str, ...]) -> list[tuple[dict, dict, dict]]:
    """--set name=value as a last override that applies to every cell."""
    train, evals = {}, {}
    for name, value in sets.items():
        axis = expand.axis_name(ctx, name, f"--set {name}")
        if axis in named:
            ctx.fail(f"--set {name}", "is an axis of this matrix; change its values in the file instead")
        where, field = axis_registry.AXES[axis].target
        if where == "cell":
            ctx.fail(f"--set {name}", "sets a cell's axis; --set takes train.*, eval.* and lora.* settings")
        (train if where == "train" else evals)[field] = value
    if not (train or evals):
        return []
    train = _config(ctx, TrainConfig, train, "--set train")
    return [({}, train, _config(ctx, EvalConfig, evals, "--set eval"))]


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
    if type_text.startswith("tuple") and isinstance(value, str):
        value = [v.strip() for v in value.split(",")]
    problem = axis_registry.setting_problem(type_text, value)
    if problem:
        ctx.fail(key, problem)
    return axis_registry.convert_setting(type_text, value)


def _overrides(ctx: _Context, raw) -> list[tuple[dict, dict, dict]]:
    if not isinstance(raw, list):
        ctx.fail("overrides", "must be a list of {when: {...}, train: {...}, eval: {...}}")
    out = []
    for i, entry in enumerate(raw):
        key = f"overrides[{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("when"), dict):
            ctx.fail(key, "each override needs 'when': {axis: value or list}")
        ctx.check_keys(entry, ("when", "train", "eval"), f"{key}.")
        when = expand.canonical_keys(ctx, entry["when"], f"{key}.when.")
        train = _config(ctx, TrainConfig, entry.get("train", {}), f"{key}.train")
        evals = _config(ctx, EvalConfig, entry.get("eval", {}), f"{key}.eval")
        out.append((when, train, evals))
    return out


def _excludes(ctx: _Context, raw) -> list[dict]:
    if not isinstance(raw, list) or not all(isinstance(r, dict) and r for r in raw):
        ctx.fail("exclude", "must be a list of non-empty mappings like {model: x, bits: 16}")
    return [expand.canonical_keys(ctx, rule, f"exclude[{i}].") for i, rule in enumerate(raw)]


def _matches(rule: dict, values: dict) -> bool:
    return all(values.get(k) in (v if isinstance(v, list) else [v]) for k, v in rule.items())


def _cell(ctx, values, models, defaults, overrides, named, task_files) -> Cell:
    train, evals = dict(defaults[0]), dict(defaults[1])
    for when, train_over, eval_over in overrides:
        if _matches(when, values):
            train.update(train_over)
            evals.update(eval_over)
    cell_fields, parts, carried = expand.apply(values, train, evals, named)
    variant = with_protocol(ctx, evals, values, "__".join(parts))
    base = values["bits"] is None
    train_config = None if base else _validated_train(ctx, TrainConfig(**train), values)
    eval_config = _validated_eval(ctx, EvalConfig(**evals), values)
    cell = expand.build_cell(models[values["model"]], values, train_config, eval_config, cell_fields, variant,
                             carried)  # fmt: skip
    used = [task_files[t] for t in _tasks_of(values["task"]) if t in task_files]
    return replace(cell, task_files=tuple(used)) if used else cell


def _tasks_of(training_set: str) -> tuple[str, ...]:
    spec = training_sets()[training_set]
    return tuple(dict.fromkeys(spec.train_tasks + spec.eval_tasks))


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
    if config.prefix_reuse not in PREFIX_REUSE:
        ctx.fail("train.prefix_reuse", f"{config.prefix_reuse!r} is not one of {', '.join(PREFIX_REUSE)}")
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


def _validated_eval(ctx: _Context, config: EvalConfig, values: dict) -> EvalConfig:
    if config.scorer not in SCORERS:
        ctx.fail("eval.scorer", f"{config.scorer!r} is not one of {', '.join(SCORERS)}")
    if config.precision not in PRECISIONS:
        ctx.fail("eval.precision", f"{config.precision!r} is not one of {', '.join(PRECISIONS)}")
    for name in ("limit", "batch_size", "max_new_tokens", "time_limit_s"):
        value = getattr(config, name)
        if value is not None and value <= 0:
            ctx.fail(f"eval.{name}", f"must be positive, not {value}")
    if config.bootstrap < 0:
        ctx.fail("eval.bootstrap", "must be 0 (off) or a positive number of resamples")
    if config.prefix_reuse not in PREFIX_REUSE:
        ctx.fail("eval.prefix_reuse", f"{config.prefix_reuse!r} is not one of {', '.join(PREFIX_REUSE)}")
    if config.merge_adapter and values.get("eval_bits") != 16:
        ctx.fail("eval.merge_adapter", f"merges into a 16-bit base only, and this cell evaluates at "
                 f"{values.get('eval_bits')} bits; use eval_bits: [16] or merge_adapter: false")  # fmt: skip
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
