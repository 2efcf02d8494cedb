"""The model and training half of "like for like": which model a published row is, and whether a cell's
adapter was trained as the source's was. Pure (no torch).

Each criterion returns the differences it finds, each in words a reader understands with bench's value
beside the source's ("ours ..., theirs ..."); a value the source does not state (null in
published.yaml) counts as a difference, never as a match. The source's recipes live in
bench/report/published.yaml (`bench_models`, `bench_configs`, `bench_recipe`).
"""

from __future__ import annotations

from collections.abc import Callable

from bench.core.catalog import tasks as known_tasks
from bench.core.catalog import training_sets
from bench.core.cell import Cell

NOT_STATED = "not stated"


def published_model(block: dict, config: str) -> dict:
    """The published configuration's model entry ({hub, architecture}), or {} if the block has none."""
    model = (block.get("bench_configs") or {}).get(config, {}).get("model")
    return (block.get("bench_models") or {}).get(model) or {}


def matches_model(block: dict, config: str, cell: Cell) -> bool:
    """Is the cell's model the published configuration's, by identity: the hub id of its source, or,
    for random weights, bench's config of the same architecture. Never a substring of a name."""
    want = published_model(block, config)
    if not want:
        return False
    return cell.model.source == (want["architecture"] if cell.model.weights == "random" else want["hub"])


def model_differences(block: dict, config: str, cell: Cell) -> list[str]:
    want = published_model(block, config)
    hub = want.get("hub", NOT_STATED)
    if cell.model.weights == "random":
        return [f"model: ours random weights ({cell.model.source}), theirs pretrained {hub}"]
    if cell.model.source != hub:
        return [f"model: ours {cell.model.source}, theirs {hub}"]
    return []


def recipe_for(block: dict, task: str) -> dict | None:
    """The source's training recipe behind its row for `task` (by the task's family), or None."""
    recipe = block.get("bench_recipe") or {}
    family = known_tasks()[task].family if task in known_tasks() else task
    return (recipe.get("tasks") or {}).get(family, recipe.get("default"))


def training_criteria(
    recipe: dict, cell: Cell, config: dict, metrics: dict, data: list[dict]
) -> list[tuple[str, list[str]]]:
    """(criterion, its differences) for every training criterion, in the order the report lists them.
    `config` is the published configuration (bits, rank), `metrics` / `data` the cell's train record's
    (what actually ran: the optimizer after any fallback, the training splits)."""
    cfg = cell.train
    return [(name, check(recipe, cell, cfg, config, metrics, data)) for name, check in CRITERIA.items()]


def _same(label: str, ours, theirs, show: Callable = str) -> list[str]:
    if theirs is None:
        return [f"{label}: ours {show(ours)}, theirs {NOT_STATED}"]
    return [] if ours == theirs else [f"{label}: ours {show(ours)}, theirs {show(theirs)}"]


def _training_data(recipe, cell, cfg, config, metrics, data) -> list[str]:
    theirs = recipe.get("training_set")
    text = recipe.get("training_text") or theirs
    out = [] if cell.task == theirs else [f"training data: ours {_set_text(cell.task)}, theirs {text}"]
    local = sorted({d["task"] for d in data if d.get("local_split")})
    if local:
        out.append(
            f"training data: ours a local split for {', '.join(local)} (the source's file is not available)"
        )
    if cfg.train_limit:
        out.append(f"training data: ours the first {cfg.train_limit} rows")
    return out


def _set_text(name: str) -> str:
    sets = training_sets()
    tasks = sets[name].train_tasks if name in sets else (name,)
    return name if tasks == (name,) else f"{name} ({' + '.join(tasks)}, each once unless a mix repeats them)"


def _train_labels(recipe, cell, cfg, config, metrics, data) -> list[str]:
    sets, specs = training_sets(), known_tasks()
    tasks = sets[cell.task].train_tasks if cell.task in sets else (cell.task,)
    trained = {(specs[t].variant_of if t in specs else None) or t for t in tasks}  # variants train on theirs
    theirs = recipe.get("train_labels") or {}
    return [
        f"training labels: ours {task} on the dataset card's labels, theirs {how}"
        for task, how in theirs.items()
        if task in trained
    ]


def _bits(recipe, cell, cfg, config, metrics, data) -> list[str]:
    return _same("bits", cell.bits, config.get("bits"))


def _rank(recipe, cell, cfg, config, metrics, data) -> list[str]:
    return _same("rank", cell.rank, config.get("rank"))


def _field(name: str, label: str, show: Callable = str):
    def check(recipe, cell, cfg, config, metrics, data) -> list[str]:
        ours = getattr(cfg, name)
        theirs = recipe.get(name)
        ours, theirs = (tuple(ours), tuple(theirs)) if isinstance(theirs, list) else (ours, theirs)
        return _same(label, ours, theirs, show)

    return check


def _optimizer(recipe, cell, cfg, config, metrics, data) -> list[str]:
    return _same("optimizer", metrics.get("optimizer") or cfg.optimizer, recipe.get("optimizer"))


def _precision(recipe, cell, cfg, config, metrics, data) -> list[str]:
    ran = metrics.get("precision")
    # What ran, where the record says it (a CPU without native bf16 runs fp32 under "bf16"), else the setting.
    ours = "fp32" if ran == "fp32" or cfg.precision == "fp32" else "bf16"
    return _same("precision", ours, recipe.get("precision"))


def _warmup(recipe, cell, cfg, config, metrics, data) -> list[str]:
    theirs = recipe.get("warmup") or {}
    ratio = getattr(cfg, "warmup_ratio", 0.0)
    ours = {"ratio": ratio} if ratio else ({"steps": cfg.warmup_steps} if cfg.warmup_steps else {})
    ours = {**ours, "schedule": "constant"}  # bench: linear warmup (if any), then constant
    return _same("warmup", ours, theirs or None, _warmup_text)


def _warmup_text(w: dict) -> str:
    head = (
        f"{w['ratio']:.0%} of the steps"
        if "ratio" in w
        else f"{w['steps']} steps"
        if "steps" in w
        else "none"
    )
    return f"{head}, then {w.get('schedule', '?')}"


def _epochs(recipe, cell, cfg, config, metrics, data) -> list[str]:
    if cfg.max_steps:
        theirs = recipe.get("epochs") or NOT_STATED
        return [f"epochs: ours {cfg.max_steps} optimizer steps (max_steps), theirs {theirs}"]
    return _same("epochs", cfg.epochs, recipe.get("epochs"), lambda e: f"{e:g}")


def _global_batch(recipe, cell, cfg, config, metrics, data) -> list[str]:
    ours = cfg.batch_per_gpu * cfg.grad_accum * cell.gpus
    shown = f"{ours} ({cfg.batch_per_gpu} x GA {cfg.grad_accum} x {cell.gpus} GPU)"
    theirs = recipe.get("global_batch")
    return [] if ours == theirs else [f"global batch: ours {shown}, theirs {theirs or NOT_STATED}"]


def _train_split(recipe, cell, cfg, config, metrics, data) -> list[str]:
    theirs = recipe.get("train_fraction")
    shown = f"an unseeded {theirs:.0%} of the train file" if theirs else NOT_STATED
    return [] if theirs == 1.0 else [f"train split: ours all of the train file, theirs {shown}"]


CRITERIA: dict[str, Callable] = {
    "training data": _training_data,
    "training labels": _train_labels,
    "bits": _bits,
    "rank": _rank,
    "method": _field("method", "method"),
    "alpha": _field("lora_alpha", "LoRA alpha"),
    "dropout": _field("lora_dropout", "LoRA dropout"),
    "targets": _field("target_modules", "LoRA targets", lambda t: ",".join(t) if isinstance(t, tuple) else t),
    "optimizer": _optimizer,
    "precision": _precision,
    "learning rate": _field("lr", "learning rate", lambda v: f"{v:g}"),
    "warmup": _warmup,
    "epochs": _epochs,
    "global batch": _global_batch,
    "weight decay": _field("weight_decay", "weight decay", lambda v: f"{v:g}"),
    "train split": _train_split,
}
