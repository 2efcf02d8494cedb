"""Evaluation worker: the base quantized to eval_bits (8-bit by default, as in the paper), its
layers split over all visible GPUs, the cell's adapter on top, lm-eval on the tasks in tasks/.

Scores come from bench.core.scoring on lm-eval's logged outputs, both scorers, with bootstrap intervals.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from pathlib import Path

import torch

from bench.core import protocols
from bench.core import tasks as task_registry
from bench.core.catalog import training_set
from bench.core.data import load_splits
from bench.core.methods import refusal
from bench.core.outcomes import STARTED, EvalMetrics, Outcome
from bench.core.records import Phase, Status
from bench.core.scoring import SCORERS, bootstrap_ci, score
from bench.core.task_content import register_cell_tasks
from bench.core.ties import TIE_KEYS
from bench.models.loading import DTYPES, compute_precision, load_model, load_tokenizer, resolve_source
from bench.models.random_weights import NOTE as RANDOM_NOTE
from bench.workers import faults
from bench.workers.chat import chat_template_for
from bench.workers.examples import task_manager
from bench.workers.measure import (
    Clock,
    NvmlSampler,
    device_names,
    memory_fields,
    peak_rss_gb,
    reset_torch_peaks,
    torch_peaks_gb,
)
from bench.workers.merge import merge_exactly, unmerge_exactly
from bench.workers.prefix import eval_reuse
from bench.workers.protocol import failure, parse_args, progress, read_cell, write_outcome


def main(argv=None) -> int:
    """One or more cells on one base (same model, eval_bits, GPUs): the base loads once, then each
    cell's adapter goes on and off it. Every cell gets its own outcome file as soon as it is done."""
    args = parse_args(argv, "bench evaluation worker", many=True)
    cells = [(read_cell(d), d) for d in args.cell_dir]
    once_per_message(logging.getLogger("bitsandbytes.autograd._functions"))
    try:
        with Clock() as load_clock:
            base, tokenizer = load_base(cells[0][0], args.data_dir)
    except Exception as exc:  # the shared load failed: that is every cell's result
        for _, cell_dir in cells:
            write_outcome(cell_dir, Phase.EVAL, failure(exc))
        return 1
    model, failed = base, 0
    for number, (cell, cell_dir) in enumerate(cells):
        (cell_dir / STARTED).touch()  # the launcher's way to tell which cell a dead worker was on
        try:
            model, load_s = with_adapter(model, cell, cell_dir / "adapter")
            reused = {
                "base_load_s": round(load_clock.seconds, 3),
                "base_shared_by": len(cells),
                "base_reused": number > 0,
            }  # fmt: skip (EvalMetrics fields)
            outcome = evaluate_cell(cell, cell_dir, args.data_dir, model, tokenizer,
                                    load_s + (0.0 if number else load_clock.seconds), reused)  # fmt: skip
        except Exception as exc:  # a failure is a result: record it, go on with the next cell
            outcome, failed = failure(exc), failed + 1
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        write_outcome(cell_dir, Phase.EVAL, outcome)
    return 1 if failed else 0


def layer_split_device_map():
    """Every GPU gets a contiguous share of the layers (naive pipeline parallelism, as the paper)."""
    gpus = torch.cuda.device_count()
    if gpus == 0:
        return {"": "cpu"}
    return {"": 0} if gpus == 1 else "balanced"


def load_base(cell, data_dir: Path):
    """The group's base in its compute dtype (cell.eval.precision; one per group: scheduler.base_of)."""
    source = resolve_source(cell.model, data_dir)
    chosen = compute_precision(eval_device(), cell.eval.precision)
    if chosen.warning:
        progress(f"warning: {chosen.warning}")
    tokenizer = load_tokenizer(source, cell.model)
    model = load_model(source, cell.model, cell.eval_bits, DTYPES[chosen.dtype], layer_split_device_map())
    contiguous_head_input(model)
    model.eval()
    return model, tokenizer


def eval_device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def contiguous_head_input(model) -> None:
    """A forward pre-hook on the output head that hands it a contiguous input. In `generate`, the model
    slices the last position (`hidden[:, -1:]`) before the head: a strided view, on which the CPU bf16
    matmul fell off its fast kernel (1,625 ms vs 8.8 ms on a contiguous copy; fp32 139 vs 36 ms,
    STACK-NOTES). The copy is one row per sequence; the values, and so every token, stay the same."""
    head = model.get_output_embeddings()
    if head is not None and not getattr(head, "_bench_contiguous", False):
        head.register_forward_pre_hook(lambda _module, args: (args[0].contiguous(), *args[1:]))
        head._bench_contiguous = True  # once: a re-used base keeps its hook


def with_adapter(model, cell, adapter_dir: Path):
    """The model to evaluate `cell` with: the base alone, or with the cell's adapter as the only
    active one (peft adds it beside the previous cell's, switches, then drops the previous one)."""
    from peft import PeftModel

    faults.inject("eval", cell.id)
    device_type = "cuda" if torch.cuda.is_available() else "cpu"
    reason = None if cell.is_base else refusal(cell.train.method, cell.eval_bits, device_type, "evaluation")
    if reason:
        raise ValueError(reason)
    with Clock() as clock:
        unmerge_exactly(model)  # the previous cell's merge, if it had one: the base as loaded again
        if cell.is_base:
            if isinstance(model, PeftModel):  # a base row after an adapter: unwrap, adapters removed
                model = model.unload()
        elif not isinstance(model, PeftModel):
            model = PeftModel.from_pretrained(model, adapter_dir, adapter_name=cell.key)
        else:
            previous = model.active_adapter
            model.load_adapter(adapter_dir, adapter_name=cell.key)
            model.set_adapter(cell.key)
            model.delete_adapter(previous)
        if cell.eval.merge_adapter and not cell.is_base:  # the matrix allows it at eval_bits 16 only
            merge_exactly(model)
        model.eval()
    return model, clock.seconds


def evaluate_cell(
    cell, cell_dir: Path, data_dir: Path, model, tokenizer, load_s: float, reused: dict
) -> Outcome:
    from lm_eval.evaluator import evaluate

    from bench.workers.lm import BenchLM

    register_cell_tasks(cell.task_files)  # a user's task files: refused if changed since the cell was made
    chat = chat_template_for(cell, tokenizer) is not None  # refuses a tokenizer without a template
    protocol = protocols.get(cell.eval.protocol)
    tasks = [protocol.test_task(t) for t in training_set(cell.task).eval_tasks]  # data tasks scored
    lm_tasks = {task: task + protocol.task_suffix for task in tasks}  # their lm-eval task names
    device = eval_device()
    chosen = compute_precision(device, cell.eval.precision)  # as load_base loaded the group's base
    gen_kwargs = {"max_gen_toks": cell.eval.max_new_tokens} if cell.eval.max_new_tokens else None
    with Clock() as tasks_clock:  # the task data: loading, not evaluating
        loaded = load_tasks(list(lm_tasks.values()), data_dir, gen_kwargs)
    lm = BenchLM(pretrained=model, tokenizer=tokenizer, batch_size=cell.eval.batch_size,
                 eos_policy=protocol.eos, stop_early=protocol.stops_early, cell_id=cell.id,
                 prefix_reuse=eval_reuse(cell.eval.prefix_reuse, cell.eval_bits))  # fmt: skip
    seed = protocols.DEFAULT_SEED if cell.eval.seed is None else cell.eval.seed
    torch.manual_seed(seed)  # per cell: a cell's draws do not depend on the cells before it
    indices = list(range(torch.cuda.device_count()))
    reset_torch_peaks(device)
    sampler = NvmlSampler(indices)
    progress(f"evaluating {cell.config_label}: {', '.join(tasks)} (limit {cell.eval.limit})")
    with sampler, Clock() as eval_clock:
        results = evaluate(
            lm=lm, task_dict=loaded, limit=cell.eval.limit, log_samples=True, bootstrap_iters=0,
            fewshot_as_multiturn=True, apply_chat_template=chat,
        )  # fmt: skip
    scores, examples = [], 0
    for task in tasks:
        samples = sorted(results["samples"][lm_tasks[task]], key=lambda s: s["doc_id"])
        outputs = [s["filtered_resps"][0] for s in samples]
        targets = [s["target"] for s in samples]
        write_samples(cell_dir / f"samples_{task}.jsonl", samples, with_prompt=chat)
        scores += task_scores(task, outputs, targets, cell, results, data_dir, lm_tasks[task], seed)
        examples += len(samples)
    peaks = [torch_peaks_gb(torch.device("cuda", i)) for i in indices] or [(None, None)]
    spans = lm.shared_spans  # the span of each generate() batch that shared one
    metrics = EvalMetrics(
        load_s=round(load_s + tasks_clock.seconds, 3),
        **reused,
        eval_s=round(eval_clock.seconds, 3),
        examples=examples,
        s_per_example=round(eval_clock.seconds / max(examples, 1), 4),
        examples_per_s=round(examples / eval_clock.seconds, 3),
        eval_bits=cell.eval_bits,
        device=device_names()[0],
        devices=device_names(),
        device_map=dict(Counter(str(d) for d in getattr(model, "hf_device_map", {"": "cpu"}).values())),
        lm_eval={t: _plain(results["results"].get(lm_tasks[t], {})) for t in tasks},
        protocol=protocol.name,
        prompt_format=cell.prompt_format,
        prefix_shared_batches=len(spans) if lm.prefix_reuse else None,
        prefix_shared_tokens_mean=round(sum(spans) / len(spans), 2) if spans else None,
        prefix_span_passes=lm.span_caches.computed if lm.prefix_reuse else None,
        precision=chosen.dtype,
        precision_reason=chosen.reason,
        adapter_merged=bool(cell.eval.merge_adapter and not cell.is_base),
        memory=memory_fields([p[0] for p in peaks], [p[1] for p in peaks], sampler.peaks_gb(), sampler.error,
                             [peak_rss_gb()]),
    )  # fmt: skip
    artifacts = {f"samples_{t}": str(cell_dir / f"samples_{t}.jsonl") for t in tasks}
    data = [load_splits(t, data_dir).info.to_dict() for t in tasks]
    notes = [RANDOM_NOTE] if cell.model.weights == "random" else []
    notes += [f"precision: {chosen.warning}"] if chosen.warning else []
    return Outcome(Status.OK, metrics, scores=tuple(scores), data=tuple(data), artifacts=artifacts,
                   notes=tuple(notes))  # fmt: skip


def once_per_message(logger: logging.Logger) -> None:
    """bitsandbytes logs "MatMul8bitLt: inputs will be cast ... to float16" on every 8-bit matmul whose
    input is not fp16 (fp32 or bf16: bench.core.precision): 7 lines per layer per generated token, written
    through the worker's log pipe (profile: 240 writes, ~10% of a tiny-model eval). Once is enough."""
    seen: set[str] = set()

    def first_time(record: logging.LogRecord) -> bool:
        fresh = record.msg not in seen
        seen.add(record.msg)
        return fresh

    logger.addFilter(first_time)


def load_tasks(tasks: list[str], data_dir: Path, gen_kwargs: dict | None) -> dict:
    """The tasks set up as lm_eval.simple_evaluate sets them up before it calls evaluate().

    simple_evaluate then also collects an environment report (pip list, git, collect_env: about 1 s of
    subprocesses per run, half of a small eval's time in the profile) that bench never reads; bench
    records its own environment. Calling evaluate() directly keeps the generations and scores.
    """
    import random

    import numpy as np
    from lm_eval.defaults import DEFAULT_OTHER_SEED

    random.seed(0)  # simple_evaluate's seeds, as bench called it (random_seed=0, others default)
    np.random.seed(DEFAULT_OTHER_SEED)
    torch.manual_seed(DEFAULT_OTHER_SEED)
    loaded = task_manager(data_dir).load(tasks)
    for task in loaded["tasks"].values():
        if gen_kwargs and task.get_config("output_type") == "generate_until":
            task.set_config(key="generation_kwargs", value=gen_kwargs, update=True)
        if task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
        task.set_fewshot_seed(seed=DEFAULT_OTHER_SEED)
    return loaded


def task_scores(task, outputs, targets, cell, results, data_dir, lm_task, seed) -> list[dict]:
    config = results.get("configs", {}).get(lm_task, {})
    max_new = (config.get("generation_kwargs") or {}).get("max_gen_toks")
    info = load_splits(task, data_dir).info
    protocol = protocols.get(cell.eval.protocol)
    folder = task_registry.get(task).folder_name
    test_file = f"{folder}/{Path(info.test_file).name}" if info.test_file else None
    how = {"protocol": protocol.name, "scored_text": protocol.scored_text, "eos": protocol.eos,
           "seed": seed if protocol.decoding.sample else None, "test_file": test_file}  # fmt: skip
    local = info.local_split
    out = []
    for scorer in SCORERS:
        point = score(task, outputs, targets, scorer)
        ci = (
            bootstrap_ci(task, outputs, targets, scorer, n_resamples=cell.eval.bootstrap)
            if cell.eval.bootstrap
            else {}
        )
        out.append({
            "task": task, "scorer": scorer, "n": len(outputs),
            "accuracy": point["accuracy"], "weighted_f1": point.get("weighted_f1"),
            "accuracy_ci": _pair(ci.get("accuracy")), "weighted_f1_ci": _pair(ci.get("weighted_f1")),
            "decoding": protocol.decoding.describe(seed), "local_split": local, **how,
            "max_new_tokens": cell.eval.max_new_tokens or max_new,
            **{k: point[k] for k in TIE_KEYS if k in point},  # finlora2025's tie-sensitive rows
        })  # fmt: skip
    return out


def _pair(value):
    return None if value is None else [round(float(v), 5) for v in value]


def _plain(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str)}


def write_samples(path: Path, samples: list[dict], with_prompt: bool = False) -> None:
    """One row per example. A chat prompt is written too: it is no longer the data's context as it
    is, and this is where to see what the model was given (lm-eval's `arguments`: context, settings)."""
    with open(path, "w") as fh:
        for s in samples:
            row = {
                "doc_id": s["doc_id"],
                "output": s["filtered_resps"][0],
                "raw": s["resps"][0][0],
                "target": s["target"],
            }
            if with_prompt:
                row["prompt"] = s["arguments"][0][0]
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
