"""The tasks bench knows and the training sets a matrix's `task` axis names. Pure (no torch).

Every task is one file (bench.core.tasks): the FinLoRA tasks ship with bench, a user's come from
their task folders. A training set is what one adapter trains on and is evaluated on: each task alone,
plus the paper's multi-task sets below.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core import tasks as task_registry
from bench.core.tasks import BUILTIN_DIR

TASKS_DIR = BUILTIN_DIR / "lm-eval"  # the lm-eval YAMLs generated from the task files (bench tasks --path)


@dataclass(frozen=True)
class TrainingSet:
    """A matrix `task` value: what one adapter trains on and what it is evaluated on."""

    name: str
    train_tasks: tuple[str, ...]
    eval_tasks: tuple[str, ...]


# The paper's multi-task sets (each task alone is a training set of its own, see training_set()).
MULTI_TASK_SETS: dict[str, TrainingSet] = {
    s.name: s
    for s in (
        # The paper fine-tunes XBRL tags and values together (one adapter, both test sets).
        TrainingSet("xbrl", ("xbrl_tags", "xbrl_value"), ("xbrl_tags", "xbrl_value")),
        # The Dec 2024 paper's one sentiment adapter, evaluated on all four sentiment test sets.
        TrainingSet("sentiment", ("fpb", "fiqa_sa", "tfns", "nwgi"), ("fpb", "fiqa_sa", "tfns", "nwgi")),
        # FinLoRA 2025's sentiment adapter (finlora_sentiment_train: each train once, as `sentiment`),
        # also scored on FinLoRA's own label-swapped TFNS file, the one its published TFNS numbers used.
        TrainingSet(
            "sentiment_2025",
            ("fpb", "fiqa_sa", "tfns", "nwgi"),
            ("fpb", "fiqa_sa", "tfns", "tfns_as_published", "nwgi"),
        ),
        # FinLoRA 2025's sentiment adapters as trained (bench.core.mixes: FPB x6, FiQA x21, TFNS x2, NWGI x1).
        TrainingSet(
            "sentiment_2025_mix",
            ("fpb", "fiqa_sa", "tfns", "nwgi"),
            ("fpb", "fiqa_sa", "tfns", "tfns_as_published", "nwgi"),
        ),
        # The same adapter on the paper's own mix (bench.core.mixes: repeats and seeded order), FiQA on
        # FinGPT's split for training and test (its train split holds 180 of the flare test's 233 texts).
        TrainingSet(
            "sentiment_fingpt",
            ("fpb", "fiqa_sa_fingpt", "tfns", "nwgi"),
            ("fpb", "fiqa_sa_fingpt", "tfns", "nwgi"),
        ),
    )
}


def training_sets() -> dict[str, TrainingSet]:
    """Every training set this process knows: each registered task alone, then the multi-task sets."""
    single = {name: TrainingSet(name, (name,), (name,)) for name in task_registry.REGISTRY.all()}
    return {**single, **MULTI_TASK_SETS}


def training_set(name: str) -> TrainingSet:
    sets = training_sets()
    if name not in sets:
        raise task_registry.TaskError(f"unknown task {name!r}; known: {', '.join(sets)}")
    return sets[name]


def tasks() -> dict:
    """{name: TaskSpec} of every task this process knows (built-in first, in file order)."""
    return task_registry.REGISTRY.all()
