"""The committed speed results file (benchmarks/measured.py) and its Markdown table (benchmarks/tables.py),
from lines written by hand: no model runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import measured  # noqa: E402
import tables  # noqa: E402

HOST = {"cpu_model": "Test CPU", "cpu_count": 2, "cpu_flags": ["avx2"], "torch": "2.13.0", "torch_threads": 2,
        "gpus": [], "git_commit": "abc123", "load_avg_1m": 1.5}  # fmt: skip
SETTINGS = {"model": "m", "task": "fpb", "bits": "4", "rank": "4", "steps": "6", "batch": "8", "warmup": "2",
            "eval_bits": "8", "eval_batch": "8"}  # fmt: skip


def line(phase: str, side: str, rep: int, position: int, **values) -> dict:
    return {"benchmark": "speed", "run_id": "r1", "phase": phase, "side": side, "rep": rep,
            "position": position, "settings": SETTINGS, "host": HOST, **values}  # fmt: skip


def test_steady_rate_leaves_the_warmup_steps_out():
    assert measured.steady_rate([10.0, 1.0, 1.0, 2.0], [100, 100, 100, 100], warmup=1) == 75.0
    assert measured.steady_rate([1.0], [5], warmup=1) is None


def test_median_interval_is_the_median_and_range_of_the_repetitions():
    assert measured.median_interval([3.0, 1.0, 2.0, None]) == {"n": 3, "median": 2.0, "low": 1.0, "high": 3.0}
    assert measured.median_interval([])["median"] is None


def test_cpu_facts_keep_the_model_and_the_precision_flags():
    cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC 9B14\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n"
    facts = measured.cpu_facts(cpuinfo)
    assert facts["cpu_model"] == "AMD EPYC 9B14"
    assert facts["cpu_flags"] == ["avx2", "avx512f", "avx512_bf16"]


def test_append_read_and_a_torn_last_line(tmp_path):
    path = tmp_path / "measured" / "speed.jsonl"
    measured.append({"a": 1}, path)
    measured.append({"a": 2}, path)
    with open(path, "a") as fh:
        fh.write('{"a": 3')  # a run killed mid-write
    assert measured.read(path) == [{"a": 1}, {"a": 2}]
    assert measured.read(tmp_path / "none.jsonl") == []


@pytest.fixture
def records() -> list[dict]:
    out = [line("train", "bench", 0, 0, tokens_per_s=200.0, precision="fp32", tokens_per_cpu_s=90.0),
           line("train", "plain_random", 0, 1, tokens_per_s=100.0, precision="fp32"),
           line("train", "plain_random", 1, 0, tokens_per_s=150.0, precision="fp32"),
           line("train", "bench", 1, 1, tokens_per_s=240.0, precision="fp32")]  # fmt: skip
    check = {"scores_identical": True}
    for rep, (paper, bench, stock) in enumerate([(2.0, 6.0, 3.0), (4.0, 8.0, 5.0)]):
        out += [line("eval", "paper_b8", rep, 0, examples=16, examples_per_s=paper, score_check=check),
                line("eval", "paper_b8_sorted", rep, 1, examples=16, examples_per_s=paper * 1.5),
                line("eval", "lmeval_b8", rep, 2, examples=16, examples_per_s=stock),
                line("eval", "bench_b8", rep, 3, examples=16, examples_per_s=bench)]  # fmt: skip
    return [{"benchmark": "speed", "run_id": "old", "phase": "train", "side": "bench", "rep": 0}] + out


def test_the_table_shows_medians_ranges_and_per_repetition_ratios(records):
    text = tables.render(records)  # the latest run: r1, not "old"
    assert "Run `r1`" in text
    bench = next(row for row in text.splitlines() if row.startswith("| bench as shipped"))
    assert "220.0 [200.0–240.0]" in bench and "1 (reference)" in bench
    assert "| 90.0 [90.0–90.0] | 2 |" in bench  # CPU-second column: one repetition has it
    plain = next(row for row in text.splitlines() if row.startswith("| HF Trainer + peft, random"))
    # per repetition bench / plain: 200/100 = 2.0 and 240/150 = 1.6 -> median 1.8, range 1.6-2.0
    assert "125.0 [100.0–150.0]" in plain and "1.80 [1.60–2.00]×" in plain
    evals = next(row for row in text.splitlines() if row.startswith("| bench (lm-eval"))
    assert "7.0 [6.0–8.0]" in evals and "1 (reference)" in evals
    paper = next(row for row in text.splitlines() if row.startswith("| paper's loop, batch 8 |"))
    assert "2.50 [2.00–3.00]×" in paper  # bench / paper per repetition: 6/2 and 8/4
    stock = next(row for row in text.splitlines() if row.startswith("| stock lm-eval `hf`"))
    assert "1.80 [1.60–2.00]×" in stock  # 6/3 and 8/5
    # over the faster baseline per repetition: max(3.0 sorted, 3.0 stock) -> 2.0; max(6.0, 5.0) -> 1.33
    assert "over the faster of paper_b8_sorted and lmeval_b8, per repetition: 1.67 [1.33–2.00]x" in text
    assert "scores identical on every side and repetition (bench.core.scoring, every scorer): True" in text
    assert "steps 3-6" in text and "load average during the runs 1.5–1.5" in text


def test_render_names_a_missing_run(records):
    assert tables.render(records, "nope") == "no speed run nope in the file"
    assert tables.render([]) == "no speed runs recorded"
