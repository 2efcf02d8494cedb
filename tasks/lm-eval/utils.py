"""lm-eval glue for the FinLoRA tasks: the data loader, the answer filter and the metrics.

lm-eval imports this file by path (`!function utils.x` resolves next to the YAML). Everything
here defers to bench: rows come from bench.core.data, scores from bench.core.scoring, so lm-eval and
bench's own code cannot disagree.
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import bench  # noqa: F401
except ImportError:
    # A stock `lm_eval --include_path tasks` run from elsewhere, with bench not installed:
    # tasks/lm-eval/ sits two levels below the repository's top, beside bench/.
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import datasets

from bench.core.data import load_splits, resolve_data_dir
from bench.core.protocols import scored_text
from bench.core.scoring import answer_text, score
from bench.core.tasks import REGISTRY

METRICS = {
    "acc_finlora": ("finlora", "accuracy"),
    "f1_finlora": ("finlora", "weighted_f1"),
    "acc_strict": ("strict", "accuracy"),
    "f1_strict": ("strict", "weighted_f1"),
    "acc_finlora2025": ("finlora2025", "accuracy"),
    "f1_finlora2025": ("finlora2025", "weighted_f1"),
}


def _split(rows: list[dict], task: str) -> datasets.Dataset:
    # from_dict keeps the columns even for an empty split. `task` rides along so that
    # process_results knows which scoring rule applies.
    return datasets.Dataset.from_dict(
        {
            "context": [r["context"] for r in rows],
            "target": [r["target"] for r in rows],
            "task": [task] * len(rows),
        }
    )


def load_dataset(
    bench_task: str,
    bench_task_file: str | None = None,
    bench_task_sha256: str | None = None,
    data_dir: str | None = None,
    **_metadata,
) -> datasets.DatasetDict:
    """lm-eval calls this with the task's metadata (version, model args, ...) and dataset_kwargs.

    A user's task names its task file (bench.core.task_yaml writes it into the YAML): registering it
    here lets this process score it too (process_results and the metrics look the task up by name)."""
    if bench_task_file:
        REGISTRY.add_file(Path(bench_task_file), bench_task_sha256)
    spec = REGISTRY.get(bench_task)
    folder = resolve_data_dir(data_dir) if spec.data.in_data_dir else None
    splits = load_splits(bench_task, folder)
    return datasets.DatasetDict(
        {"train": _split(splits.train, bench_task), "test": _split(splits.test, bench_task)}
    )


def first_line(resps, docs) -> list[list[str]]:
    """Filter: each generation -> its first non-empty line (see bench.core.scoring.answer_text)."""
    return [[answer_text(r) for r in doc_resps] for doc_resps in resps]


def after_answer(resps, docs) -> list[list[str]]:
    """Filter of the finlora-2024 tasks: the text FinLoRA's 2024 code scored (bench.core.protocols)."""
    return _scored(resps, docs, "after_answer")


def after_last_answer(resps, docs) -> list[list[str]]:
    """Filter of the finlora-2025 tasks: the text after the last "Answer:", stripped."""
    return _scored(resps, docs, "after_last_answer")


def _scored(resps, docs, kind: str) -> list[list[str]]:
    return [[scored_text(kind, r, doc["task"]) for r in rs] for rs, doc in zip(resps, docs, strict=True)]


def process_results(doc: dict, results: list[str]) -> dict:
    # Per-document items; the scores need the whole test set (F1), so aggregation does the work.
    item = (doc["task"], results[0], doc["target"])
    return {name: item for name in METRICS}


def _aggregate(items: list[tuple[str, str, str]], name: str) -> float:
    scorer, key = METRICS[name]
    tasks = {task for task, _, _ in items}
    if len(tasks) != 1:
        raise ValueError(f"{name}: items from several tasks {sorted(tasks)}; score each task alone")
    outputs = [output for _, output, _ in items]
    targets = [target for _, _, target in items]
    return score(tasks.pop(), outputs, targets, scorer)[key]


def acc_finlora(items):
    return _aggregate(items, "acc_finlora")


def f1_finlora(items):
    return _aggregate(items, "f1_finlora")


def acc_strict(items):
    return _aggregate(items, "acc_strict")


def f1_strict(items):
    return _aggregate(items, "f1_strict")


def acc_finlora2025(items):
    return _aggregate(items, "acc_finlora2025")


def f1_finlora2025(items):
    return _aggregate(items, "f1_finlora2025")
