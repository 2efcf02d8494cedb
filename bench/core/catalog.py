"""The FinLoRA tasks bench knows: where their data lives and which tasks a training set feeds.

Pure data (no torch). The prompts themselves live in tasks/ (lm-eval YAMLs); this catalog only
says which files hold a task's rows and how training sets combine tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

# tasks/ at the top of the repository is installed as the package data `bench.tasks` (pyproject's
# package-dir), so a wheel carries it and stock `lm_eval --include_path $(bench tasks --path)` works.
TASKS_DIR = Path(str(resources.files("bench.tasks")))


@dataclass(frozen=True)
class TaskData:
    name: str
    family: str  # sentiment | headline | ner | xbrl
    folder: str  # sub-folder of the data directory
    train_files: tuple[str, ...]  # first that exists wins
    test_files: tuple[str, ...]
    # A variant reads another file of a task's folder (the FinGPT FiQA split, the TFNS test file as
    # FinLoRA published it); it is scored with, and compared as, the task it varies.
    variant_of: str | None = None


TASKS: dict[str, TaskData] = {
    t.name: t
    for t in (
        TaskData("fpb", "sentiment", "fpb", ("train.jsonl",), ("test.jsonl",)),
        TaskData("fiqa_sa", "sentiment", "fiqa_sa", ("train.jsonl",), ("test.jsonl",)),
        TaskData("tfns", "sentiment", "tfns", ("train.jsonl",), ("test.jsonl",)),
        TaskData("nwgi", "sentiment", "nwgi", ("train.jsonl",), ("test.jsonl",)),
        TaskData(
            "headline",
            "headline",
            "headline",
            ("train.jsonl", "train_partial_rows71901-82160.jsonl"),
            ("test.jsonl",),
        ),
        TaskData("ner", "ner", "ner", ("train.jsonl",), ("test.jsonl",)),
        TaskData("xbrl_tags", "xbrl", "xbrl_tags", ("train.jsonl",), ("test.jsonl",)),
        TaskData("xbrl_value", "xbrl", "xbrl_value", ("train.jsonl",), ("test.jsonl",)),
        # FiQA SA as FinGPT split it (938 / 275 rows): the split of fingpt-sentiment-train and of the
        # test behind FinLoRA's interim 2024 numbers (see the data README).
        TaskData(
            "fiqa_sa_fingpt",
            "sentiment",
            "fiqa_sa",
            ("train_fingpt_variant.jsonl",),
            ("test_fingpt_variant.jsonl",),
            variant_of="fiqa_sa",
        ),
        # TFNS scored on FinLoRA's 2025 test file, whose positive and neutral labels are swapped
        # (1,566 neutral tweets labelled positive): only for comparing with the 2025 TFNS numbers.
        # It trains on the correct labels.
        TaskData(
            "tfns_as_published",
            "sentiment",
            "tfns",
            ("train.jsonl",),
            ("test_finlora_as_published.jsonl",),
            variant_of="tfns",
        ),
    )
}


@dataclass(frozen=True)
class TrainingSet:
    """A matrix `task` value: what one adapter trains on and what it is evaluated on."""

    name: str
    train_tasks: tuple[str, ...]
    eval_tasks: tuple[str, ...]


# Single-task sets for every task, plus the paper's multi-task sets.
TRAINING_SETS: dict[str, TrainingSet] = {
    **{name: TrainingSet(name, (name,), (name,)) for name in TASKS},
    # The paper fine-tunes XBRL tags and values together (one adapter, both test sets).
    "xbrl": TrainingSet("xbrl", ("xbrl_tags", "xbrl_value"), ("xbrl_tags", "xbrl_value")),
    # The Dec 2024 paper's one sentiment adapter, evaluated on all four sentiment test sets.
    "sentiment": TrainingSet(
        "sentiment", ("fpb", "fiqa_sa", "tfns", "nwgi"), ("fpb", "fiqa_sa", "tfns", "nwgi")
    ),
    # FinLoRA 2025's sentiment adapter (finlora_sentiment_train: each train once, as `sentiment`), also
    # scored on FinLoRA's own label-swapped TFNS file, the one its published TFNS numbers used.
    "sentiment_2025": TrainingSet(
        "sentiment_2025",
        ("fpb", "fiqa_sa", "tfns", "nwgi"),
        ("fpb", "fiqa_sa", "tfns", "tfns_as_published", "nwgi"),
    ),
    # FinLoRA 2025's sentiment adapters as trained (bench.core.mixes: FPB x6 + FiQA x21 + TFNS x2 + NWGI x1).
    "sentiment_2025_mix": TrainingSet(
        "sentiment_2025_mix",
        ("fpb", "fiqa_sa", "tfns", "nwgi"),
        ("fpb", "fiqa_sa", "tfns", "tfns_as_published", "nwgi"),
    ),
    # The same adapter on the paper's own mix (bench.core.mixes: repeats and seeded order), FiQA on
    # FinGPT's split for training and test (its train split holds 180 of the flare test's 233 texts).
    "sentiment_fingpt": TrainingSet(
        "sentiment_fingpt",
        ("fpb", "fiqa_sa_fingpt", "tfns", "nwgi"),
        ("fpb", "fiqa_sa_fingpt", "tfns", "nwgi"),
    ),
}
