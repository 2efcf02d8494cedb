"""The report's seed spread, paired-differences and equivalence tables, from records and samples files
written by hand in the layout bench.workers.evaluate writes them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.matrix import parse
from bench.core.records import RunRecord, Status
from bench.core.samples import SampleReader
from bench.core.scoring import score
from bench.report.build import build_report
from bench.report.published import load_published
from bench.report.render import render_html, render_markdown

N = 60
GOLD = [("positive", "negative", "neutral")[i % 3] for i in range(N)]
MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "method": ["lora", "dora"], "seed": [1, 2],
             "task": ["fpb"], "eval_bits": [16]},
    "base": True,
    "eval": {"limit": N, "scorer": "strict"},
    "compare": [{"a": {"method": "dora"}, "b": {"method": "lora"}, "margin": 5.0}],
}  # fmt: skip


def outputs(correct: int) -> list[str]:
    """Right on the first `correct` rows, then 'neutral' (right on every third row: GOLD cycles)."""
    return [GOLD[i] if i < correct else "neutral" for i in range(N)]


OUTPUTS = {  # (method, seed) -> outputs; base answers 'neutral' throughout: right on 20 rows
    ("lora", 1): outputs(45),  # right on 45 + 5 neutral rows after them = 50
    ("lora", 2): outputs(40),  # 40 + 7 = 47
    ("dora", 1): outputs(45),  # identical to lora seed 1: Δ = 0
    ("dora", 2): outputs(52),  # 52 + 3 = 55: 8 rows (13.3 points) above lora seed 2
}  # fmt: skip


def write_store(root: Path, cells) -> list[RunRecord]:
    records = []
    for cell in cells:
        outs = ["neutral"] * N if cell.is_base else OUTPUTS[(cell.train.method, cell.train.seed)]
        folder = root / "cells" / cell.dirname
        folder.mkdir(parents=True)
        with open(folder / "samples_fpb.jsonl", "w") as fh:
            for i, (out, gold) in enumerate(zip(outs, GOLD, strict=True)):
                fh.write(json.dumps({"doc_id": i, "output": out, "raw": out, "target": gold}) + "\n")
        scores = []
        for scorer in ("strict", "finlora"):
            point = score("fpb", outs, GOLD, scorer)
            acc, f1 = point["accuracy"], point["weighted_f1"]  # intervals of ±10 points / ±0.08 F1
            scores.append({"task": "fpb", "scorer": scorer, "n": N, "accuracy": acc, "weighted_f1": f1,
                           "accuracy_ci": [acc - 0.1, acc + 0.1], "weighted_f1_ci": [f1 - 0.08, f1 + 0.08],
                           "decoding": "greedy"})  # fmt: skip
        common = {"cell_key": cell.key, "cell_id": cell.id, "cell": cell.to_dict(), "status": Status.OK,
                  "started_at": "2026-11-29T10:00:00+00:00", "finished_at": "2026-11-29T10:01:00+00:00",
                  "wall_s": 60.0, "matrix": "m"}  # fmt: skip
        if not cell.is_base:
            metrics = {"train_loss_last": 0.5, "device": "cpu"}
            records.append(RunRecord(phase="train", metrics=metrics, **common))
        artifacts = {"samples_fpb": f"cells/{cell.dirname}/samples_fpb.jsonl"}
        records.append(RunRecord(phase="eval", scores=scores, artifacts=artifacts, **common))
    return records


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    matrix = parse(MATRIX, Path("m.yaml"))
    records = write_store(root, matrix.cells)
    return build_report("m", "", list(matrix.cells), records, load_published(),
                        comparisons=matrix.comparisons, samples=SampleReader(root))  # fmt: skip


def table(report, prefix: str):
    return next(t for t in report.tables if t.key.startswith(prefix))


def rows_by(t, *keys: str) -> dict:
    """Rows by the text of `keys` columns; each row maps its column names ("group label") to entries."""
    names = [f"{c.group} {c.label}".strip() for c in t.columns]
    return {tuple(r[names.index(k)].text for k in keys): dict(zip(names, r, strict=True)) for r in t.rows}


def test_seed_spread_sits_beside_the_single_run_interval(report):
    seeds = rows_by(table(report, "seeds-"), "Configuration")
    lora = seeds[("tiny 4bit-r4",)]
    assert lora["Seeds"].text == "2 (1, 2)"
    # accuracies 50/60 = 83.3 and 47/60 = 78.3: mean 80.8, sd 5/sqrt(2) = 3.5 (points)
    assert lora["Accuracy mean ± sd"].text == "80.8 ± 3.5"
    assert lora["Accuracy per seed"].text == "83.3, 78.3"
    assert lora["Accuracy one run's 95% CI"].text == "±10.0"
    assert lora["Weighted F1 one run's 95% CI"].text == "±0.080"


def test_paired_table_compares_with_base_and_as_the_matrix_asks_seed_by_seed(report):
    t = table(report, "paired-")
    found = rows_by(t, "A", "B (reference)")
    assert set(found) == {
        ("tiny 4bit-r4 · seed 1", "tiny base"), ("tiny 4bit-r4 · seed 2", "tiny base"),
        ("tiny 4bit-r4-dora · seed 1", "tiny base"), ("tiny 4bit-r4-dora · seed 2", "tiny base"),
        ("tiny 4bit-r4-dora · seed 1", "tiny 4bit-r4 · seed 1"),
        ("tiny 4bit-r4-dora · seed 2", "tiny 4bit-r4 · seed 2"),
    }  # fmt: skip
    same = found[("tiny 4bit-r4-dora · seed 1", "tiny 4bit-r4 · seed 1")]
    assert (same["Δ Acc"].value, same["Δ F1"].value, same["McNemar p"].value) == (0, 0, 1.0)
    assert same["Verdict"].text == "no significant difference" and same["Δ Acc"].detail == "+0.00–+0.00"
    # lora seed 1 is right on 50 rows, every one of base's 20 among them: 30 discordant rows, all for A
    vs_base = found[("tiny 4bit-r4 · seed 1", "tiny base")]
    assert vs_base["Δ Acc"].value == pytest.approx(100 * 30 / 60)
    assert vs_base["McNemar p"].value == pytest.approx(2 * 0.5**30) and vs_base["Verdict"].text == "better"
    assert vs_base["Holm p"].value >= vs_base["McNemar p"].value
    # DoRA against LoRA over the two seeds: Δ = 0 and +13.33 points, mean +6.67 ± 9.43
    assert same["Δ Acc over seeds"].text == "+6.67 ± 9.43"
    assert any("Holm-corrected across the 6 tests" in n for n in t.notes)


def test_equivalence_answers_the_matrix_question(report):
    answers = rows_by(table(report, "equivalence-"), "A")
    same = answers[("tiny 4bit-r4-dora · seed 1",)]
    assert same["Answer"].value == "equivalent"
    sentence = "tiny 4bit-r4-dora · seed 1 is equivalent to tiny 4bit-r4 · seed 1 within ±5 points on fpb"
    assert same["Answer"].text == sentence
    apart = answers[("tiny 4bit-r4-dora · seed 2",)]  # +13.3 points on 60 rows, 8 discordant
    assert apart["Answer"].value in ("different", "cannot tell")


def test_the_report_renders_the_new_tables(report):
    md, html = render_markdown(report), render_html(report)
    for title in ("Seed spread", "Paired differences", "Equivalence questions"):
        assert title in md and title in html


def test_without_samples_the_pairs_say_why(tmp_path):
    matrix = parse(MATRIX, Path("m.yaml"))
    records = write_store(tmp_path, matrix.cells)
    report = build_report(
        "m", "", list(matrix.cells), records, load_published(), comparisons=matrix.comparisons
    )
    t = table(report, "paired-")
    assert {r[4].text for r in t.rows} == {"no samples"}


def test_the_statistics_layers_import_no_torch():
    code = (
        "import sys; import bench.core.paired, bench.core.samples, bench.core.comparisons, "
        "bench.core.methods, bench.core.matrix, bench.report.paired_table, bench.report.seed_table, "
        "bench.report.render, bench.gate.check, bench.gate.paired_gate; "
        "print(sorted(m for m in ('torch', 'transformers', 'peft', 'bitsandbytes', 'deepspeed', 'lm_eval') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dora_and_rslora_cells_are_not_matched_with_published_lora_rows():
    from bench.report.model import CellState
    from bench.report.published import SCORE_BLOCKS, load_published, paper_key

    m = parse({**MATRIX, "models": {"llama-3.1-8b": {"source": "meta-llama/Llama-3.1-8B-Instruct"}},
               "axes": {**MATRIX["axes"], "model": ["llama-3.1-8b"], "method": ["lora", "dora", "rslora"]}},
              Path("m.yaml"))  # fmt: skip
    block = load_published()[SCORE_BLOCKS[0]]
    keys = {(c.train.method if c.train else "base"): paper_key(CellState(c, None, None), block)
            for c in m.cells}  # fmt: skip
    assert keys == {"base": "8b_base", "lora": "8b_4bit_r4", "dora": None, "rslora": None}
