"""Report tables, Markdown golden file, and the no-torch rule, from RunRecords written by hand.

The fixture covers every case a real store holds: ok cells on GPU and CPU, base rows, a train OOM,
an eval failure, a timeout, a cell never run, a random-weight cell, a local split, CI present and
absent, and a task without weighted F1. Regenerate the golden file with UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from bench.core.cell import Cell, EvalConfig, ModelSpec, TrainConfig
from bench.core.records import RunRecord, Status
from bench.report.build import build_report
from bench.report.published import load_published
from bench.report.render import ReportError, render_html, render_markdown, write_reports

GOLDEN = Path(__file__).parent / "golden" / "report_smoke.md"
MATRIX = "report_smoke"
ENV = {
    "host": "node-1",
    "platform": "Linux-6.1-x86_64",
    "python": "3.11.9",
    "packages": {"torch": "2.13.0", "transformers": "5.24.0", "peft": "0.21.2", "bitsandbytes": "0.50.2"},
    "git_sha": "abc123def456",
}
H100 = "NVIDIA H100 80GB HBM3"
LLAMA = ModelSpec("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct")
RANDOM = ModelSpec("llama-3.1-8b-arch", "llama-3.1-8b-instruct", weights="random")
TINY = ModelSpec("tiny", "tiny")


def make_cell(model: ModelSpec, task: str, bits: int | None, rank: int | None, gpus: int = 4) -> Cell:
    train = None if bits is None else TrainConfig(batch_per_gpu=4, max_steps=20)
    return Cell(model, task, bits, rank, gpus, 8, train, EvalConfig(limit=200))


def record(cell: Cell, phase: str, status: Status = Status.OK, minute: int = 0, **fields) -> RunRecord:
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase, status=status,
        started_at=f"2025-03-01T10:{minute:02d}:00+00:00",
        finished_at=f"2025-03-01T10:{minute + 1:02d}:00+00:00",
        wall_s=60.0, matrix=MATRIX, env=ENV, **fields,
    )  # fmt: skip


def gpu_train(cell: Cell, mem: float | None, loss: float = 0.8, **extra) -> dict:
    return {
        "load_s": 30.0, "train_s": 5400.0, "tokens_per_s": 2100.0, "steps": 20, "trainable_params": 2_359_296,
        "total_params": 8_030_000_000, "model_bytes": 5_700_000_000, "optimizer": "zero_one_adam",
        "optimizer_fallback": None, "world_size": cell.gpus, "batch_per_gpu": 4, "grad_accum": 1,
        "device": H100, "devices": [H100] * cell.gpus, "gpu_mem_sum_gb": mem, "peak_rss_gb": 12.5,
        "gpu_hours": 6.0, "adapter_bytes": 9_470_000,
        "loss_curve": [[s, round(loss + 2.0 / s**0.5, 3)] for s in (1, 2, 5, 10, 15, 20)], **extra,
    }  # fmt: skip


# Utilisation fields as the training worker writes them (bench.workers.utilisation): 8B on H100s, tiny on CPU.
H100_MFU = {"flops_per_token": 28_100_000_000, "achieved_flops_per_s": 14_752_500_000_000,
            "peak_flops_per_s": 989_400_000_000_000, "peak_source": "table: H100 SXM bf16 dense (NVIDIA H100 "
            "datasheet (SXM column))", "mfu": 0.0149}  # fmt: skip
CPU_MFU = {
    "flops_per_token": 428_007, "achieved_flops_per_s": 898_814_700, "peak_flops_per_s": 34_663_110_815,
    "mfu": 0.0259, "peak_source": "probe: 2048x2048x2048 fp32 2 threads, best of 5, cached /c/peaks/cpu.json",
}  # fmt: skip


def score(task: str, scorer: str, acc: float, f1: float | None, ci: bool = True, local: bool = False) -> dict:
    return {
        "task": task, "scorer": scorer, "n": 200, "accuracy": acc, "weighted_f1": f1,
        "accuracy_ci": [acc - 0.05, acc + 0.05] if ci else None,
        "weighted_f1_ci": [f1 - 0.04, f1 + 0.04] if ci and f1 is not None else None,
        "decoding": "greedy", "max_new_tokens": 10, "local_split": local,
    }  # fmt: skip


def scores(task: str, acc: float, f1: float | None, **kw) -> list[dict]:
    return [score(task, "finlora", acc, f1, **kw), score(task, "strict", acc - 0.1, f1 and f1 - 0.1, **kw)]


def eval_metrics(device: str = H100, gpus: int = 4) -> dict:
    return {
        "eval_s": 40.0,
        "examples": 200,
        "s_per_example": 0.2,
        "device": device,
        "devices": [device] * gpus,
    }


def smoke_inputs() -> tuple[list[Cell], list[RunRecord]]:
    """The matrix's cells in matrix order, and the store's records (some superseded)."""
    c = {
        "fpb_base": make_cell(LLAMA, "fpb", None, None),
        "fpb_4": make_cell(LLAMA, "fpb", 4, 4),
        "fpb_8": make_cell(LLAMA, "fpb", 8, 8),
        "xbrl_base": make_cell(LLAMA, "xbrl", None, None),
        "xbrl_4": make_cell(LLAMA, "xbrl", 4, 4),
        "xbrl_8": make_cell(LLAMA, "xbrl", 8, 8),
        "ner_4": make_cell(LLAMA, "ner", 4, 4),
        "ner_8": make_cell(LLAMA, "ner", 8, 8),
        "ner_random": make_cell(RANDOM, "ner", 4, 4),
        "fpb_tiny": make_cell(TINY, "fpb", 4, 4, gpus=1),
    }
    local = [{"task": "xbrl_value", "train_rows": 700, "test_rows": 300, "local_split": True,
              "note": "no test file: seeded 70/30 split"}]  # fmt: skip
    xbrl_scores = scores("xbrl_tags", 0.62, 0.7) + scores("xbrl_value", 0.55, None, local=True)
    cpu_reason = "no CUDA device: pynvml NVMLError_LibraryNotFound"
    cpu_train = {**gpu_train(c["fpb_tiny"], None, 1.6), "device": "cpu", "devices": ["cpu"],
                 "gpu_hours": None, "gpu_mem_null_reason": cpu_reason, "peak_rss_gb": 1.9, "train_s": 95.0,
                 "optimizer": "adamw", "optimizer_fallback": "0/1 Adam needs CUDA",
                 "world_size": 1, **CPU_MFU}  # fmt: skip
    fallback = ["optimizer fallback: 0/1 Adam needs CUDA; used AdamW"]
    oom = "torch.OutOfMemoryError: CUDA out of memory"
    records = [
        record(c["fpb_base"], "eval", scores=scores("fpb", 0.70, 0.68), metrics=eval_metrics()),
        record(c["fpb_4"], "train", Status.FAILED, error="CUDA error: launch failure"),  # superseded below
        record(c["fpb_4"], "train", minute=5, metrics=gpu_train(c["fpb_4"], 33.2, **H100_MFU)),
        record(c["fpb_4"], "eval", minute=6, scores=scores("fpb", 0.84, 0.83), metrics=eval_metrics()),
        record(c["fpb_8"], "train", minute=7, metrics=gpu_train(c["fpb_8"], 46.4, 0.6, gpu_hours=7.5)),
        record(c["fpb_8"], "eval", minute=8, scores=scores("fpb", 0.86, 0.85, ci=False),
               metrics=eval_metrics()),
        record(c["xbrl_base"], "eval", minute=9, scores=xbrl_scores, data=local, metrics=eval_metrics()),
        record(c["xbrl_4"], "train", Status.OOM, minute=10, error=oom),
        record(c["xbrl_8"], "train", minute=11, metrics=gpu_train(c["xbrl_8"], 47.0, 0.4), data=local),
        record(c["xbrl_8"], "eval", Status.FAILED, minute=12, error="ValueError: bad adapter\nTraceback ..."),
        record(c["ner_8"], "train", Status.TIMEOUT, minute=13, error="killed after time_limit_s=900"),
        record(c["ner_random"], "train", minute=14, metrics=gpu_train(c["ner_random"], 33.0, 1.1),
               notes=["random weights: resources only"]),
        record(c["ner_random"], "eval", minute=15, scores=scores("ner", 0.31, 0.3), metrics=eval_metrics()),
        record(c["fpb_tiny"], "train", minute=16, notes=fallback, metrics=cpu_train),
        record(c["fpb_tiny"], "eval", minute=17, scores=scores("fpb", 0.40, 0.3),
               metrics=eval_metrics("cpu", 1)),
    ]  # fmt: skip
    return list(c.values()), records


@pytest.fixture(scope="module")
def report():
    cells, records = smoke_inputs()
    return build_report(MATRIX, "hand-written records", cells, records, load_published())


def table(report, key):
    return next(t for t in report.tables if t.key == key)


def row_texts(t, first: str) -> list[str]:
    return [e.text for e in next(r for r in t.rows if r[0].text == first)]


def column(t, group: str, label: str) -> int:
    return next(i for i, c in enumerate(t.columns) if c.group == group and c.label == label)


def test_results_rows_are_eval_tasks_and_columns_are_configurations(report):
    t = table(report, "results-finlora")
    assert [r[0].text for r in t.rows] == ["fpb", "ner", "xbrl_tags", "xbrl_value"]
    groups = [g for g, _ in t.groups if g]
    assert groups == ["llama-3.1-8b base", "llama-3.1-8b 8bit-r8", "llama-3.1-8b 4bit-r4",
                      "llama-3.1-8b-arch 4bit-r4 (random weights)", "tiny 4bit-r4"]  # fmt: skip
    assert t.title == "Results — finlora scorer (primary)"
    assert t.legend == ("higher is better: Acc, F1",)


def test_results_show_ci_best_and_status_never_blank(report):
    t = table(report, "results-finlora")
    fpb = next(r for r in t.rows if r[0].text == "fpb")
    base_acc = fpb[column(t, "llama-3.1-8b base", "Acc")]
    assert (base_acc.text, base_acc.detail) == ("70.0", "65.0–75.0") and base_acc.value == pytest.approx(0.70)
    best = fpb[column(t, "llama-3.1-8b 8bit-r8", "Acc")]
    assert (best.text, best.detail) == ("86.0", "") and best.best  # no CI in that record
    assert not fpb[column(t, "llama-3.1-8b 4bit-r4", "Acc")].best
    assert all(e.text for r in t.rows for e in r)
    xbrl = row_texts(t, "xbrl_tags")
    assert "OOM (train)" in xbrl and "failed (eval)" in xbrl
    assert row_texts(t, "ner")[column(t, "llama-3.1-8b 4bit-r4", "Acc")] == "not run"
    assert row_texts(t, "ner")[column(t, "llama-3.1-8b 8bit-r8", "Acc")] == "timeout (train)"


def test_random_weight_cells_never_show_accuracy(report):
    t = table(report, "results-finlora")
    ner = next(r for r in t.rows if r[0].text == "ner")
    entry = ner[column(t, "llama-3.1-8b-arch 4bit-r4 (random weights)", "Acc")]
    assert entry.text == "random weights" and entry.value is None
    assert "31.0" not in render_markdown(report)
    frame = report.frame()
    assert frame.loc[frame.weights == "random", "accuracy"].isna().all()


def test_local_split_and_missing_f1(report):
    t = table(report, "results-finlora")
    value = row_texts(t, "xbrl_value")
    assert value[column(t, "llama-3.1-8b base", "Acc")] == "55.0 †"
    assert value[column(t, "llama-3.1-8b base", "F1")] == "n/a"
    assert "| 55.0 † (50.0–60.0) | n/a |" in render_markdown(report)
    lists = dict(report.lists)
    assert lists["Local split (not comparable with the paper)"][0].startswith("xbrl_value: local split")


def test_second_scorer_gets_its_own_table(report):
    t = table(report, "results-strict")
    assert row_texts(t, "fpb")[column(t, "llama-3.1-8b base", "Acc")] == "60.0"


def test_resources_table_gpu_and_cpu(report):
    t = table(report, "resources")
    heads = [c.heading for c in t.columns]
    tiny = next(r for r in t.rows if r[0].text == "tiny 4bit-r4")
    assert tiny[heads.index("Peak GPU mem (sum) (GB)")].text == "n/a (CPU)"
    assert tiny[heads.index("Peak RSS (GB)")].text == "1.90"
    assert tiny[heads.index("Optimizer")].text == "adamw (fallback)"
    assert any("no CUDA device" in n for n in t.notes)
    gpu = next(r for r in t.rows if r[0].text == "llama-3.1-8b 4bit-r4" and r[1].text == "fpb")
    assert gpu[heads.index("Peak GPU mem (sum) (GB)")].text == "33.20"
    assert gpu[heads.index("Batch")].text == "4 × 4, GA 1"
    assert gpu[heads.index("Trainable params")].text == "2.36M"
    assert gpu[heads.index("GPU-hours (h)")].text == "6.000"
    assert gpu[heads.index("Device")].text == f"4× {H100}"
    oom = next(r for r in t.rows if r[0].text == "llama-3.1-8b 4bit-r4" and r[1].text == "xbrl")
    assert oom[2].text == "OOM (train)" and oom[2].status == "oom"


def test_comparison_with_published(report):
    t = table(report, "compare-scores")
    rows = [[e.text for e in r] for r in t.rows if r[0].text == "fpb" and r[1].text == "llama-3.1-8b 4bit-r4"]
    by_source = {r[2]: r for r in rows}
    paper = by_source["arXiv 2505.19819"]
    assert paper[3] == "strict" and paper[4] == "84.16" and paper[5] == "74.0" and paper[6] == "-10.16"
    interim = by_source["interim 2024-11 (88c507a)"]
    assert interim[3] == "finlora" and interim[4] == "86.47" and interim[6] == "-2.47"
    assert interim[10] == "no" and interim[11].startswith("model, training labels, bits, rank, method")
    assert interim[11].endswith("scorer, labels, F1 order")
    assert "Training: training data: ours fpb, theirs FinGPT fingpt-sentiment-train" in interim[12]
    assert "decoding: ours greedy, theirs sampled (T 0.6, top-p 0.9" in interim[12]
    assert "eval bits: ours 8, theirs 16" in interim[12] and "rows: ours the first 200" in interim[12]
    assert paper[10] == "no" and "scorer: ours strict, theirs finlora2025" in paper[12]  # records before it
    assert not any(r[1].text.startswith("tiny") or "random" in r[1].text for r in t.rows)
    memory = table(report, "compare-memory")
    ours = {r[0].text: r[7].text for r in memory.rows}
    assert ours == {"llama-3.1-8b 8bit-r8": "timeout (train)", "llama-3.1-8b 4bit-r4": "not run",
                    "llama-3.1-8b-arch 4bit-r4 (random weights)": "33.00"}  # fmt: skip
    row = next(r for r in memory.rows if r[0].text.startswith("llama-3.1-8b-arch"))
    assert [e.text for e in row] == ["llama-3.1-8b-arch 4bit-r4 (random weights)", "4 (× 4 GPU)", "2.36M",
                                     "2.36M", "4.02", "5.70", "8.25", "33.00", "+24.750",
                                     row[-1].text]  # fmt: skip
    assert row[-1].text.split("; ") == [
        "gradient checkpointing: ours off, theirs on", "LoRA weights: ours fp32, theirs fp16",
        "embeddings, norms and lm_head: ours fp32 (prepare_model_for_kbit_training), theirs fp16",
        "weights: ours random, theirs pretrained",
        "tokenizer: ours a BPE trained on the task text, theirs Llama 3.1's own (128k vocabulary) "
        "(so sequence lengths differ)",
        "sequence length: ours cut at 512 tokens, theirs no truncation",
        "GPUs: ours the sum over 4 GPUs, theirs one process's max_memory_allocated",
    ]  # fmt: skip


def test_header_facts_and_problem_lists(report):
    facts = dict(report.facts)
    assert facts["Hardware"] == f"4× {H100} (9 records); CPU (2 records)"
    assert facts["Git"] == "abc123def456"
    assert facts["Dates"] == "2025-03-01T10:00:00+00:00 → 2025-03-01T10:18:00+00:00"
    assert facts["Decoding"] == "greedy, max_new_tokens 10"
    assert facts["Eval bits"] == "8-bit"
    lists = dict(report.lists)
    assert lists["Out of memory"] == ("llama-3.1-8b__xbrl__4bit-r4__4gpu__eval8bit: OOM (train) — "
                                      "torch.OutOfMemoryError: CUDA out of memory",)  # fmt: skip
    assert lists["Failed"][0].endswith("failed (eval) — ValueError: bad adapter")
    assert lists["Missing (not run)"] == ("llama-3.1-8b__ner__4bit-r4__4gpu__eval8bit: not run",)
    assert any("optimizer fallback" in n for n in lists["Run notes"])


def test_every_score_names_its_scorer(report):
    frame = report.frame()
    assert frame.loc[frame.accuracy.notna(), "scorer"].isin(["finlora", "strict"]).all()
    for t in report.tables:
        if t.key.startswith("results"):
            assert t.key.split("-")[1] in t.title


def test_no_records_raises_report_error(tmp_path):
    cells, _ = smoke_inputs()
    with pytest.raises(ReportError, match="no records for matrix 'report_smoke'"):
        write_reports(MATRIX, "", cells, [], tmp_path)


def test_write_reports_writes_three_files(tmp_path):
    cells, records = smoke_inputs()
    paths = write_reports(MATRIX, "hand-written records", cells, records, tmp_path)
    assert [p.name for p in paths] == [f"{MATRIX}.md", f"{MATRIX}.html", f"{MATRIX}.csv"]
    frame = pd.read_csv(paths[2])
    assert len(frame) == frame.drop_duplicates(["cell_key", "task", "scorer"]).shape[0]
    assert set(frame.status) == {"ok", "oom", "failed", "timeout", "not_run"}
    html = paths[1].read_text()
    # GPU and CPU runs get separate memory and time figures (4), plus the loss curves.
    assert (
        html.count("<svg") == 5
        and "position: sticky" in html
        and "http" not in html.split("<style>")[1][:5000]
    )


def test_html_escapes_text():
    cells, records = smoke_inputs()
    report = build_report(MATRIX, "<script>alert(1)</script>", cells, records, load_published())
    html = render_html(report)
    assert "<script>alert" not in html and "&lt;script&gt;" in html


def test_markdown_matches_golden(report):
    text = render_markdown(report)
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text, encoding="utf-8")
    assert GOLDEN.exists(), f"missing {GOLDEN}: run UPDATE_GOLDEN=1 pytest {__file__}"
    assert text == GOLDEN.read_text(encoding="utf-8"), "Markdown changed: review, then UPDATE_GOLDEN=1 pytest"


def test_memory_comparison_takes_the_published_column_of_each_batch():
    """Table 1 with a batch axis: one row per batch, each against the paper's figure at that batch."""
    from dataclasses import replace

    cells = [
        replace(make_cell(RANDOM, "ner", 4, 8, gpus=1), variant=f"b{b}", axes=(("batch", b),),
                train=TrainConfig(batch_per_gpu=b, max_steps=10))
        for b in (4, 8)
    ]  # fmt: skip
    records = []
    for i, (cell, mem) in enumerate(zip(cells, (9.1, 10.2), strict=True)):
        metrics = gpu_train(cell, mem, batch_per_gpu=cell.train.batch_per_gpu, world_size=1)
        records.append(record(cell, "train", metrics=metrics, minute=i))
    built = build_report("t1", "batch axis", cells, records, load_published())
    memory = table(built, "compare-memory")
    rows = {r[0].text: [e.text for e in r[1:]] for r in memory.rows}
    assert set(rows) == {"llama-3.1-8b-arch 4bit-r8 · batch 4 (random weights)",
                         "llama-3.1-8b-arch 4bit-r8 · batch 8 (random weights)"}  # fmt: skip
    b4, b8 = (rows[f"llama-3.1-8b-arch 4bit-r8 · batch {b} (random weights)"] for b in (4, 8))
    assert (b4[0], b4[5], b4[6]) == ("4 (× 1 GPU)", "8.26", "9.10")
    assert (b8[0], b8[5], b8[6]) == ("8 (× 1 GPU)", "8.65", "10.20")
