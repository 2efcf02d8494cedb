"""Our numbers beside the published FinLoRA ones (bench/report/published.yaml), like with like.

Pure (no torch). A configuration maps to a published one by the model's identity (its source is the
published model's hub id, or bench's config of the same architecture for random weights: never a
substring of a name), bits and rank; each row says whether model, training recipe and evaluation match
theirs (bench.report.likeness), because the published blocks were trained, scored and decoded
differently from each other.
"""

from __future__ import annotations

from dataclasses import replace
from importlib import resources

import yaml

from bench.core.metrics import METRICS, Metric
from bench.report.likeness import likeness_to_source, published_task
from bench.report.model import (
    CellState,
    Column,
    Entry,
    Table,
    config_key,
    config_labels,
    eval_tasks,
    task_order,
)
from bench.report.recipe_likeness import matches_model

SCORE_BLOCKS = ("results_2505_19819", "interim_2024_11_quantized_paper_era")
MEMORY_BLOCK = "gpu_memory_training_llama_3_1_8b_ner"
PUB_ACC = Metric("pub_acc", "Published Acc", "%", "pct2", False)
OUR_ACC = Metric("our_acc", "Ours Acc", "%", "pct", False)
DELTA_ACC = Metric("delta_acc", "Δ Acc", "pp", "delta_pp")
PUB_F1 = Metric("pub_f1", "Published F1", "", "f1", False)
DELTA_F1 = Metric("delta_f1", "Δ F1", "", "delta_f1")
GB = Metric("gb", "GB", "GB", "gb", True)
DELTA_GB = Metric("delta_gb", "Δ peak", "GB", "delta_f1")


def load_published() -> dict:
    return yaml.safe_load(
        resources.files("bench.report").joinpath("published.yaml").read_text(encoding="utf-8")
    )


def paper_key(state: CellState, block: dict) -> str | None:
    """The block's name of the cell's configuration ("8b_base", "8b_4bit_r4"): the published
    configuration of the same model (by identity), bits and rank; None if it has none."""
    cell = state.cell
    if cell.train is not None and cell.train.method != "lora":
        return None  # the published rows here are plain LoRA: a DoRA/rsLoRA cell has no published twin
    configs = block.get("bench_configs") or {}
    return next(
        (key for key, config in configs.items()
         if matches_model(block, key, cell) and (config["bits"], config["rank"]) == (cell.bits, cell.rank)),
        None,
    )  # fmt: skip


def published_value(block: dict, metric: str, task: str, key: str) -> float | None:
    # The 2025 block is keyed task -> config, the 2024 one config -> task.
    table = block.get(metric) or {}
    outer, inner = (key, task) if key in table else (task, key)
    return (table.get(outer) or {}).get(inner)


def score_comparison(states: list[CellState], published: dict) -> Table:
    labels = config_labels([st.cell for st in states])
    numbers = (PUB_ACC, OUR_ACC, DELTA_ACC, PUB_F1, METRICS["weighted_f1"], DELTA_F1)
    columns = (
        *(Column(label) for label in ("Task", "Configuration", "Source", "Our scorer")),
        *(Column("Ours F1" if m.key == "weighted_f1" else m.label, "", m) for m in numbers),
        *(Column(label) for label in ("Like for like", "Matches", "Differs")),
    )
    rows, sources = [], []
    for name in SCORE_BLOCKS:
        block = published.get(name)
        if not block:
            continue
        label = block.get("bench_label", name)
        bits = block.get("eval_bits") or "not stated"
        sources.append(
            f"{label}: {block['source']}. Their scorer: {block['scorer']}. Their decoding: "
            f"{block.get('decoding') or 'not stated'}. Their eval bits: {bits}."
        )
        for st in states:
            key = paper_key(st, block)
            for task in eval_tasks(st.cell) if key and not st.random else ():
                pub_acc = published_value(block, "accuracy", published_task(task), key)
                if pub_acc is not None:
                    rows.append(_score_row(st, task, block, labels[config_key(st.cell)], pub_acc, key))
    order = {label: i for i, label in enumerate(labels.values())}
    rows.sort(key=lambda r: (task_order(r[0].value), r[2].text, order[r[1].text]))
    notes = (
        "Δ = ours − published (accuracy in percentage points); — in Published F1: not published. 'Like for "
        "like' is yes only when the model (by hub id), the training recipe (training data and mix, labels "
        "trained on, bits, rank, LoRA method/alpha/dropout/targets, optimizer, precision, learning rate, "
        "warmup, epochs, global batch, weight decay, train split) and the evaluation (protocol: decoding, "
        "new tokens, eos, scored text; scorer, test split (the whole file), test labels, eval bits, eval "
        "batch for 8-bit, F1's argument order) all match the source; 'Differs' names each difference "
        "(ours, theirs), grouped as model | training | evaluation; a value the source does not state counts "
        "as a difference. 'ties: N rows, lo–hi' under Ours Acc (finlora2025): N rows whose outcome depends "
        "on the tie rule (labels found at the same place, one a prefix of the other; FinLoRA's own choice "
        "follows set() order, bench's the longest), and the accuracy with every tie going either way "
        "(bench.core.ties). Protocols: bench.core.protocols; the sources' settings and recipes: "
        "bench/report/published.yaml.",
        *sources,
    )
    if not rows:
        notes += (
            "No configuration maps to a published one (its model source must be a published model's hub "
            "id, e.g. meta-llama/Llama-3.1-8B-Instruct, with a published bits/rank pair).",
        )
    return Table("compare-scores", "Comparison with published accuracy and F1", columns, tuple(rows), notes)


def _score_row(
    st: CellState, task: str, block: dict, label: str, pub_acc: float, key: str
) -> tuple[Entry, ...]:
    scorer = block.get("bench_scorer", "finlora")
    if st.score(task, scorer) is None and block.get("bench_fallback_scorer"):  # records older than it
        scorer = block["bench_fallback_scorer"]
    pub_f1 = published_value(block, "weighted_f1", published_task(task), key)
    ours = st.score(task, scorer) if st.outcome[0] == "ok" else None
    status = "ok" if ours else ("none" if st.outcome[0] == "ok" else st.outcome[0])
    missing = "no score" if st.outcome[0] == "ok" else st.label
    acc, f1 = (ours or {}).get("accuracy"), (ours or {}).get("weighted_f1")
    row = [Entry(task, task), Entry(label), Entry(block.get("bench_label", "?")), Entry(scorer)]
    row += [Entry(PUB_ACC.format(pub_acc), pub_acc), _with_ties(_ours(OUR_ACC, acc, status, missing), ours)]
    row.append(_delta(DELTA_ACC, None if acc is None else 100 * acc - pub_acc))
    row.append(_entry(PUB_F1, pub_f1))
    row += [_ours(METRICS["weighted_f1"], f1, status, missing)]
    row.append(_delta(DELTA_F1, None if f1 is None or pub_f1 is None else f1 - pub_f1))
    return tuple(row) + _likeness(st, task, block, key, ours)


def _likeness(st: CellState, task: str, block: dict, key: str, ours: dict | None) -> tuple[Entry, ...]:
    if ours is None:
        return (Entry("—", status="none"),) * 3
    split = next((d for d in (st.eval.data if st.eval else []) if d.get("task") == task), {})
    split = {**split, "limit": st.cell.eval.limit}
    trained = {"metrics": st.train.metrics, "data": list(st.train.data)} if st.train else None
    found = likeness_to_source(block, key, task, st.cell, ours, split, trained)
    verdict = Entry(found.verdict, found.like_for_like)
    return verdict, Entry(", ".join(found.matches) or "—"), Entry(found.grouped())


def _with_ties(entry: Entry, ours: dict | None) -> Entry:
    """finlora2025: the accuracy range over both tie choices, where some rows depend on it."""
    rows, span = (ours or {}).get("tie_sensitive"), (ours or {}).get("tie_accuracy_range")
    if not rows or not span:
        return entry
    lo, hi = (OUR_ACC.format(v) for v in span)
    return replace(entry, detail=f"ties: {rows} rows, {lo}–{hi}")


def _ours(metric: Metric, value, status: str, missing: str) -> Entry:
    if status != "ok":
        return Entry(missing, status=status)
    return Entry(metric.format(value), value, status="ok" if value is not None else "none")


def _delta(metric: Metric, value: float | None) -> Entry:
    return Entry("—", status="none") if value is None else Entry(metric.format(value), value)


def _entry(metric: Metric, value) -> Entry:
    return Entry("—", status="none") if value is None else Entry(metric.format(value), value)
