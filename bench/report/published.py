"""Our numbers beside the published FinLoRA ones (bench/report/published.yaml), like with like.

Pure (no torch). A configuration maps to a published one by model size ("8b" / "70b" in the model
name), bits and rank; each row says whether scorer, decoding and inference bits match theirs,
because the published blocks were scored and decoded differently from each other.
"""

from __future__ import annotations

import re
from importlib import resources

import yaml

from bench.core.metrics import METRICS, Metric
from bench.core.records import Phase
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


def paper_key(state: CellState) -> str | None:
    """The published name of a configuration ("8b_base", "8b_4bit_r4"), or None if it has none."""
    size = re.search(r"(?<!\d)(8|70)b", state.cell.model.name.lower())
    if size is None:
        return None
    cell = state.cell
    if cell.train is not None and cell.train.method != "lora":
        return None  # the published rows here are plain LoRA: a DoRA/rsLoRA cell has no published twin
    return f"{size.group(1)}b_base" if cell.is_base else f"{size.group(1)}b_{cell.bits}bit_r{cell.rank}"


def published_value(block: dict, metric: str, task: str, key: str) -> float | None:
    # The 2025 block is keyed task -> config, the 2024 one config -> task.
    table = block.get(metric) or {}
    outer, inner = (key, task) if key in table else (task, key)
    return (table.get(outer) or {}).get(inner)


def comparison_tables(states: list[CellState], published: dict) -> list[Table]:
    return [score_comparison(states, published), memory_comparison(states, published)]


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
            key = paper_key(st)
            for task in eval_tasks(st.cell) if key and not st.random else ():
                pub_acc = published_value(block, "accuracy", published_task(task), key)
                if pub_acc is not None:
                    rows.append(_score_row(st, task, block, labels[config_key(st.cell)], pub_acc, key))
    order = {label: i for i, label in enumerate(labels.values())}
    rows.sort(key=lambda r: (task_order(r[0].value), r[2].text, order[r[1].text]))
    notes = (
        "Δ = ours − published (accuracy in percentage points); — in Published F1: not published. 'Like for "
        "like' is yes only when protocol (decoding, new tokens, eos, scored text), scorer, test split (the "
        "whole file), test labels, eval bits and F1's argument order all match the source; 'Differs' names "
        "each difference (ours, theirs). Protocols: bench.core.protocols; the sources' settings: "
        "bench/report/published.yaml.",
        *sources,
    )
    if not rows:
        notes += ("No configuration maps to a published one (the model name needs '8b' or '70b').",)
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
    row += [Entry(PUB_ACC.format(pub_acc), pub_acc), _ours(OUR_ACC, acc, status, missing)]
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
    found = likeness_to_source(block, key, task, ours, st.cell.eval_bits, split)
    verdict = Entry("yes" if found.like_for_like else "no", found.like_for_like)
    return verdict, Entry(", ".join(found.matches) or "—"), Entry("; ".join(found.differs) or "—")


def _ours(metric: Metric, value, status: str, missing: str) -> Entry:
    if status != "ok":
        return Entry(missing, status=status)
    return Entry(metric.format(value), value, status="ok" if value is not None else "none")


def _delta(metric: Metric, value: float | None) -> Entry:
    return Entry("—", status="none") if value is None else Entry(metric.format(value), value)


def memory_comparison(states: list[CellState], published: dict) -> Table:
    """Training memory of 8B on NER against the published Table 1 rows (same bits and rank)."""
    block = published.get(MEMORY_BLOCK) or {"rows": [], "source": "missing", "measured_as": "?"}
    labels = config_labels([st.cell for st in states])
    params, peak = METRICS["trainable_params"], METRICS["gpu_mem_sum_gb"]
    columns = (
        Column("Configuration"),
        Column("Batch per GPU"),
        *(Column(f"{who} params", "", params) for who in ("Published", "Ours")),
        *(Column(f"{who} model", "", GB) for who in ("Published", "Ours")),
        Column("Published peak", "", GB),
        Column("Ours peak (sum)", "", peak),
        Column(DELTA_GB.label, "", DELTA_GB),
    )
    rows = []
    for st in states:
        pub = _memory_row(block, st)
        if pub is not None:
            rows.append(_memory_entries(st, pub, labels[config_key(st.cell)]))
    notes = (
        f"Source: {block['source']}. Measured as: {block['measured_as']}.",
        "Published peak is taken at our batch per GPU when they published it (4 or 8). Ours is summed "
        "over the cell's GPUs. Random-weight cells count here: memory depends on the architecture, "
        "not the weights.",
    )
    if not rows:
        notes += ("No 8B NER training cell in this matrix with a published bits/rank pair.",)
    return Table(
        "compare-memory", "Comparison with published training memory (8B, NER)", columns, tuple(rows), notes
    )


def _memory_row(block: dict, st: CellState) -> dict | None:
    key = paper_key(st)
    if key is None or not key.startswith("8b_") or st.cell.is_base or "ner" not in eval_tasks(st.cell):
        return None
    return next((r for r in block["rows"] if (r["bits"], r["rank"]) == (st.cell.bits, st.cell.rank)), None)


def _memory_entries(st: CellState, pub: dict, label: str) -> tuple[Entry, ...]:
    train = st.train.metrics if st.train else {}
    batch = train.get("batch_per_gpu", st.cell.train.batch_per_gpu if st.cell.train else None)
    pub_peak = pub.get(f"gb_batch{batch}")
    ours_peak = train.get("gpu_mem_sum_gb")
    ours_model = train["model_bytes"] / 1e9 if train.get("model_bytes") else None
    delta = None if ours_peak is None or pub_peak is None else ours_peak - pub_peak
    return (
        Entry(label), Entry(f"{batch} (× {st.cell.gpus} GPU)", batch),
        _entry(METRICS["trainable_params"], float(pub["trainable_params"])),  # "4.72e6" loads as a string
        _entry(METRICS["trainable_params"], train.get("trainable_params")),
        _entry(GB, float(pub["model_gb"])), _entry(GB, ours_model),
        _entry(GB, pub_peak), _our_peak(st, train), _entry(DELTA_GB, delta),
    )  # fmt: skip


def _entry(metric: Metric, value) -> Entry:
    return Entry("—", status="none") if value is None else Entry(metric.format(value), value)


def _our_peak(st: CellState, train: dict) -> Entry:
    if st.outcome[0] != "ok" and st.outcome[1] == Phase.TRAIN:
        return Entry(st.label, status=st.outcome[0])
    if train and train.get("gpu_mem_sum_gb") is None:
        text = "n/a (CPU)" if train.get("device") == "cpu" else "n/a"
        return Entry(text, status="none", note=train.get("gpu_mem_null_reason") or "")
    return _entry(METRICS["gpu_mem_sum_gb"], train.get("gpu_mem_sum_gb"))
