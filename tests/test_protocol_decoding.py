"""Each protocol's decoding reaches `generate` on a real tiny model, through the task YAMLs, lm-eval and
bench's model class; the sampled protocol repeats itself under one seed and not under another."""

from __future__ import annotations

import pytest
import torch

from bench.core import protocols


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_dir)


def run(tiny, data_dir, protocol: str, seed: int = 0, limit: int = 4):
    """Evaluate FPB's first rows as bench's worker does; return generate's kwargs and the outputs."""
    from lm_eval.evaluator import evaluate

    from bench.workers.evaluate import load_tasks
    from bench.workers.lm import AnswersComplete, BenchLM

    model, tokenizer = tiny
    p = protocols.get(protocol)
    name = p.lm_eval_task("fpb")
    calls, real_generate = [], model.generate

    def spy(**kwargs):  # records what reached the real generate, then runs it
        early = any(isinstance(c, AnswersComplete) for c in kwargs["stopping_criteria"])
        calls.append({**kwargs, "early": early})
        return real_generate(**kwargs)

    model.generate = spy
    try:
        lm = BenchLM(pretrained=model, tokenizer=tokenizer, batch_size=4, eos_policy=p.eos,
                     stop_early=p.stops_early)  # fmt: skip
        loaded = load_tasks([name], data_dir, None)
        torch.manual_seed(seed)
        results = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True, bootstrap_iters=0)
    finally:
        model.generate = real_generate
    samples = sorted(results["samples"][name], key=lambda s: s["doc_id"])
    return calls, [s["resps"][0][0] for s in samples], [s["filtered_resps"][0] for s in samples]


@pytest.mark.parametrize("protocol", sorted(protocols.PROTOCOLS))
def test_protocol_settings_reach_generate(tiny, data_dir, protocol):
    _, tokenizer = tiny
    p = protocols.get(protocol)
    calls, raw, scored = run(tiny, data_dir, protocol)
    call = calls[0]
    assert call["max_length"] - call["input_ids"].shape[1] == p.max_new("fpb")
    assert call["do_sample"] is p.decoding.sample
    if p.decoding.sample:
        assert (call["temperature"], call["top_p"]) == (0.6, 0.9)
    else:
        assert "temperature" not in call
    if p.eos == "tokenizer":
        assert call["eos_token_id"] == tokenizer.eos_token_id
    else:
        assert "eos_token_id" not in call  # the model's generation_config: every eos id it knows
    assert call["early"] is p.stops_early
    for r, s in zip(raw, scored, strict=True):
        assert s == protocols.scored_text(p.scored_text, r, "fpb")


def test_sampling_repeats_under_one_seed_and_greedy_ignores_the_seed(tiny, data_dir):
    _, first, _ = run(tiny, data_dir, "finlora-2024", seed=11, limit=8)
    _, again, _ = run(tiny, data_dir, "finlora-2024", seed=11, limit=8)
    _, other, _ = run(tiny, data_dir, "finlora-2024", seed=12, limit=8)
    assert first == again and first != other
    assert run(tiny, data_dir, "finlora-2025", seed=1)[1] == run(tiny, data_dir, "finlora-2025", seed=2)[1]


def test_stock_lm_eval_runs_the_protocol_tasks(tiny_dir, data_dir):
    """`lm_eval --include_path tasks --tasks fpb_finlora2024,fpb_finlora2025` as a user runs it: the
    sampled settings pass stock HFLM's checks and the 2025 task reports the finlora2025 metrics."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "BENCH_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "lm_eval", "--include_path", "tasks",
        "--tasks", "fpb_finlora2024,fpb_finlora2025",
        "--model", "hf", "--model_args", f"pretrained={tiny_dir},dtype=float32", "--device", "cpu",
        "--limit", "4", "--batch_size", "4", "--seed", "1234",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    table = done.stdout.replace(" ", "")
    assert "|fpb_finlora2024|" in table and "|fpb_finlora2025|" in table
    assert "|acc_finlora2025|" in table and "|after_answer|" in table and "|after_last_answer|" in table
