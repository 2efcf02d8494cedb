"""Training memory of Llama 3.1 8B on NER beside the published Table 1 rows, with what differs between
the two measurements stated per row, from the cell's settings and its train record (data, not a
fixed note). Pure (no torch).

The published setting is `bench_setting` of the memory block in bench/report/published.yaml.
"""

from __future__ import annotations

from bench.core.cell import Cell
from bench.core.metrics import METRICS
from bench.core.records import Phase
from bench.report.model import CellState, Column, Entry, Table, config_key, config_labels, eval_tasks
from bench.report.published import DELTA_GB, GB, MEMORY_BLOCK, _entry
from bench.report.recipe_likeness import NOT_STATED


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
        Column("Differs"),
    )
    rows = []
    for st in states:
        pub = _memory_row(block, st)
        if pub is not None:
            differs = (
                "; ".join(memory_differences(block.get("bench_setting") or {}, st.cell, _train(st))) or "—"
            )
            rows.append((*_memory_entries(st, pub, labels[config_key(st.cell)]), Entry(differs)))
    notes = (
        f"Source: {block['source']}. Measured as: {block['measured_as']}.",
        "Published peak is taken at our batch per GPU when they published it (4 or 8). Ours is summed "
        "over the cell's GPUs. Random-weight cells count here: memory depends on the architecture, "
        "not the weights. 'Differs' names each difference between our measurement's setting and "
        "theirs (ours, theirs): Δ peak is like for like only on a row whose Differs is —.",
    )
    if not rows:
        notes += ("No 8B NER training cell in this matrix with a published bits/rank pair.",)
    return Table(
        "compare-memory", "Comparison with published training memory (8B, NER)", columns, tuple(rows), notes
    )


def memory_differences(setting: dict, cell: Cell, train: dict) -> list[str]:
    """What differs between the setting our peak was measured in and the published one's."""
    cfg, out = cell.train, []
    theirs_ckpt = setting.get("gradient_checkpointing")
    if cfg.gradient_checkpointing != theirs_ckpt:
        ours, theirs = (_on_off(cfg.gradient_checkpointing), _on_off(theirs_ckpt))
        out.append(f"gradient checkpointing: ours {ours}, theirs {theirs}")
    ours_lora = _lora_precision(cell, train)
    if ours_lora != setting.get("lora_weights"):
        out.append(f"LoRA weights: ours {ours_lora}, theirs {setting.get('lora_weights') or NOT_STATED}")
    if cell.bits in (4, 8):  # prepare_model_for_kbit_training (bench/workers/train.py)
        out.append("embeddings, norms and lm_head: ours fp32 (prepare_model_for_kbit_training), theirs "
                   f"{setting.get('lora_weights') or NOT_STATED}")  # fmt: skip
    if cell.model.weights != setting.get("weights"):
        out.append(f"weights: ours {cell.model.weights}, theirs {setting.get('weights') or NOT_STATED}")
    if cell.model.weights == "random":  # bench/models/random_weights.py
        tokenizer = setting.get("tokenizer") or NOT_STATED
        text = f"tokenizer: ours a BPE trained on the task text, theirs {tokenizer}"
        out.append(f"{text} (so sequence lengths differ)")
    theirs_len = setting.get("max_seq_len")
    if cfg.max_seq_len != theirs_len:
        shown = theirs_len or "no truncation"
        out.append(f"sequence length: ours cut at {cfg.max_seq_len} tokens, theirs {shown}")
    if cell.gpus != 1:
        out.append(f"GPUs: ours the sum over {cell.gpus} GPUs, theirs one process's max_memory_allocated")
    return out


def _on_off(value) -> str:
    return NOT_STATED if value is None else ("on" if value else "off")


def _lora_precision(cell: Cell, train: dict) -> str:
    # bench trains LoRA weights in fp32 whatever the base computes in (build_model in bench/workers/train.py)
    ran = train.get("precision")
    return "fp32" if ran is None or "fp32" in ran else ran


def _train(st: CellState) -> dict:
    return st.train.metrics if st.train else {}


def _memory_row(block: dict, st: CellState) -> dict | None:
    cell = st.cell
    if cell.is_base or "ner" not in eval_tasks(cell) or not _is_8b(block, cell):
        return None
    if cell.train is not None and cell.train.method != "lora":
        return None
    return next((r for r in block["rows"] if (r["bits"], r["rank"]) == (cell.bits, cell.rank)), None)


def _is_8b(block: dict, cell: Cell) -> bool:
    """The cell's model is the published rows' (Llama 3.1 8B) by identity: its hub id, or bench's
    config of the same architecture for random weights."""
    model = (block.get("bench_models") or {}).get("8b") or {}
    want = model.get("architecture") if cell.model.weights == "random" else model.get("hub")
    return bool(want) and cell.model.source == want


def _memory_entries(st: CellState, pub: dict, label: str) -> tuple[Entry, ...]:
    train = _train(st)
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


def _our_peak(st: CellState, train: dict) -> Entry:
    if st.outcome[0] != "ok" and st.outcome[1] == Phase.TRAIN:
        return Entry(st.label, status=st.outcome[0])
    if train and train.get("gpu_mem_sum_gb") is None:
        text = "n/a (CPU)" if train.get("device") == "cpu" else "n/a"
        return Entry(text, status="none", note=train.get("gpu_mem_null_reason") or "")
    return _entry(METRICS["gpu_mem_sum_gb"], train.get("gpu_mem_sum_gb"))
