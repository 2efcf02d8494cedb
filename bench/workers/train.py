"""Training worker: one process per GPU (torchrun). bitsandbytes-quantized base + peft LoRA,
trained on the DeepSpeed engine; writes the adapter and train-outcome.json.

Run by the launcher: python -m torch.distributed.run --nproc_per_node N -m bench.workers.train
    --cell-dir D --data-dir P
With --timing-steps N (the gate's speed repetitions, `bench check --run`): the same training for N steps,
written as speed-outcome.json, its adapter put aside (speed-adapter/) so the evaluated one stays.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import astuple

import torch
import torch.distributed as dist

from bench.core.catalog import training_set
from bench.core.data import load_splits
from bench.core.flops import FlopCount
from bench.core.methods import lora_switches, refusal
from bench.core.mixes import MIXES, mix_note
from bench.core.outcomes import Outcome, TrainMetrics
from bench.core.records import Phase, Status
from bench.core.task_content import register_cell_tasks
from bench.models.loading import (
    DTYPES,
    compute_precision,
    directory_bytes,
    load_model,
    load_tokenizer,
    quantized_linear_counts,
    resolve_source,
)  # fmt: skip
from bench.models.random_weights import NOTE as RANDOM_NOTE
from bench.workers import checkpoints, faults, packed_attention
from bench.workers.chat import chat_template_for
from bench.workers.checkpoints import Checkpointer
from bench.workers.examples import (
    BATCHERS,
    encode_rows,
    keeps_logits,
    make_batch,
    training_rows,
)
from bench.workers.measure import (
    Clock,
    NvmlSampler,
    device_names,
    memory_fields,
    peak_rss_gb,
    reset_torch_peaks,
    torch_peaks_gb,
)
from bench.workers.optim import choose_optimizer, deepspeed_config
from bench.workers.prefix import batch_loss, off_reason, packable, shared_span
from bench.workers.protocol import event, failure, parse_args, progress, read_cell, write_outcome
from bench.workers.stopping import PREEMPTED_EXIT, StopRequest
from bench.workers.truncation import truncated_by_task
from bench.workers.utilisation import batch_flops, lora_step, utilisation_fields

STEPS_FILE = "train-steps.json"  # per step: wall and CPU seconds, real tokens (benchmarks/speed.py)


def main(argv=None) -> int:
    args = parse_args(argv, "bench training worker", timing=True)
    cell = read_cell(args.cell_dir)
    phase = Phase.SPEED if args.timing_steps else Phase.TRAIN
    init_distributed()
    try:
        outcome = train_cell(cell, args.cell_dir, args.data_dir, args.timing_steps)
    except Exception as exc:  # a failure is a result: record it, let the matrix go on
        write_outcome(args.cell_dir, phase, failure(exc))
        return 1
    if dist.get_rank() == 0:
        write_outcome(args.cell_dir, phase, outcome)
    dist.barrier()
    dist.destroy_process_group()  # without it one rank can abort at exit
    return PREEMPTED_EXIT if outcome_status(outcome) == Status.PREEMPTED else 0


def outcome_status(outcome) -> Status | None:
    return outcome.status if isinstance(outcome, Outcome) else None  # ranks other than 0 hand back {}


def init_distributed() -> None:
    import deepspeed

    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_PORT", "29511")
    if not torch.cuda.is_available():
        # Skips a ~55 s JIT build of a shared-memory op that gloo on CPU does not need.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def pick_device(world: int) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    here = int(os.environ.get("LOCAL_WORLD_SIZE", world))  # a multi-node cell: this node's share
    if torch.cuda.device_count() < here:
        count = torch.cuda.device_count()
        raise RuntimeError(f"the cell asks for {here} GPUs here, this machine has {count}")
    local = int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    return torch.device("cuda", local)


def build_model(cell, source: str, device: torch.device):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    cfg = cell.train
    dtype = DTYPES[compute_precision(device, cfg.precision).dtype]
    device_map = {"": device.index if device.type == "cuda" else "cpu"}
    model = load_model(source, cell.model, cell.bits, dtype, device_map)
    model.config.use_cache = False
    packed_attention.install(model)  # the packed row's attention row by row; SDPA's everywhere else
    if cell.bits in (4, 8):
        # As in QLoRA: norms and embeddings in fp32, inputs require grad for checkpointing.
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    elif cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    lora = LoraConfig(
        r=cell.rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **lora_switches(cfg.method),  # dora / rslora: peft's own switches, so the adapter stays a peft one
    )
    model = get_peft_model(model, lora)
    for param in model.parameters():
        if param.requires_grad:  # LoRA weights train in fp32 whatever the base computes in
            param.data = param.data.float()
    return model


def train_cell(cell, cell_dir, data_dir, timing_steps: int | None = None) -> Outcome:
    import deepspeed

    register_cell_tasks(cell.task_files)  # a user's task files: refused if changed since the cell was made
    rank, world = dist.get_rank(), dist.get_world_size()
    device = pick_device(world)
    cfg = cell.train
    stop = StopRequest()
    if not timing_steps:  # the gate's timed runs are short and never resumed
        stop.install()
    faults.inject("train", cell.id)
    reason = refusal(cfg.method, cell.bits, device.type, "training")
    if reason:
        raise ValueError(reason)
    torch.manual_seed(cfg.seed)
    source = resolve_source(cell.model, data_dir)
    chosen = compute_precision(device, cfg.precision)  # what build_model loads in, and why
    if chosen.warning and rank == 0:
        progress(f"warning: {chosen.warning}")
    with Clock() as load_clock:
        tokenizer = load_tokenizer(source, cell.model)
        chat = chat_template_for(cell, tokenizer)  # refuses a tokenizer without one, before the model
        model = build_model(cell, source, device)
    quantized = quantized_linear_counts(model)
    flop_model, flops_note = lora_step(model, cell)
    trainable, total = model.get_nb_trainable_parameters()

    train_tasks = training_set(cell.task).train_tasks
    rows = training_rows(cell.task, data_dir, cfg.train_limit, cfg.seed, chat)
    encoded = encode_rows(tokenizer, rows, cfg.max_seq_len)  # refuses rows that cannot fit, by name
    optimizer, fallback = choose_optimizer(cfg.optimizer, device)
    batches_per_rank = len(encoded) // cfg.batch_per_gpu // world
    if batches_per_rank == 0:
        raise ValueError(
            f"{len(encoded)} training examples do not make one batch of {cfg.batch_per_gpu} per rank"
        )
    total_steps = timing_steps or cfg.max_steps or math.ceil(cfg.epochs * batches_per_rank / cfg.grad_accum)
    ds_config = deepspeed_config(cfg, world, optimizer, total_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=model, model_parameters=params, config=ds_config)
    resume = None if timing_steps else checkpoints.load(engine, cell_dir, cell.key)
    if resume and rank == 0:
        progress(f"resuming from the checkpoint at step {resume['step']}/{total_steps}")
    every = 0 if timing_steps else checkpoints.interval(cfg, total_steps)
    spaced = cfg.checkpoint_every is None  # bench's default: also spaced by the checkpoints' own cost
    saver = Checkpointer(cell_dir, cell.key, every, cfg.checkpoint_keep, cell.id, spaced)

    reset_torch_peaks(device)
    sampler = NvmlSampler([device.index] if device.type == "cuda" else [])
    with sampler, Clock() as train_clock:
        stats = train_loop(engine, encoded, cfg, total_steps, tokenizer.pad_token_id, device, flop_model,
                           cell.id, saver, stop if not timing_steps else None, resume)  # fmt: skip
    if stats["preempted"]:
        note = f"stopped on request at step {stats['steps']}/{total_steps}; it resumes from its checkpoint"
        return Outcome(Status.PREEMPTED, notes=(note,), error=note) if rank == 0 else {}
    allocated, reserved = torch_peaks_gb(device)
    nvml = sampler.peaks_gb()
    gathered = [None] * world
    dist.all_gather_object(gathered, (allocated, reserved, nvml[0] if nvml else None, peak_rss_gb()))
    if rank != 0:
        return {}
    adapter_dir = cell_dir / ("speed-adapter" if timing_steps else "adapter")  # keep the evaluated one
    engine.module.save_pretrained(adapter_dir)
    if not timing_steps and not cfg.keep_checkpoints:
        checkpoints.remove_all(cell_dir)  # the adapter is saved: nothing is left to resume
    steps = {k: stats[k] for k in ("step_s", "step_cpu_s", "step_tokens")}  # rank 0's, for benchmarks/
    (cell_dir / STEPS_FILE).write_text(json.dumps(steps))
    memory = memory_fields(
        [g[0] for g in gathered], [g[1] for g in gathered], [g[2] for g in gathered], sampler.error,
        [g[3] for g in gathered],
    )  # fmt: skip
    on_gpu = device.type == "cuda"
    dtype = DTYPES[chosen.dtype]
    # After training and outside its clock: a CPU's first run probes its matmul peak (seconds, then cached).
    flops = utilisation_fields(stats["flops"], stats["tokens"], train_clock.seconds, world, device, dtype,
                               flops_note)  # fmt: skip
    metrics = TrainMetrics(
        load_s=round(load_clock.seconds, 3),
        train_s=round(train_clock.seconds, 3),
        tokens_per_s=round(stats["tokens"] / train_clock.seconds, 2),
        examples_per_s=round(stats["examples"] / train_clock.seconds, 3),
        steps=stats["steps"],
        examples_seen=stats["examples_all"],
        train_examples=len(encoded),
        truncated_examples=sum(e.truncated for e in encoded),
        truncated_by_task=truncated_by_task([r.task for r in rows], [e.truncated for e in encoded]),
        train_loss_first=stats["curve"][0][1],
        train_loss_last=stats["curve"][-1][1],
        loss_curve=stats["curve"],
        trainable_params=trainable,
        total_params=total,
        model_bytes=engine.module.get_memory_footprint(),
        quantized_linear=quantized,
        optimizer=optimizer,
        optimizer_requested=cfg.optimizer,
        optimizer_fallback=fallback,
        precision="bf16 compute, fp32 LoRA weights" if dtype == torch.bfloat16 else "fp32",
        zero_stage=cfg.zero_stage,
        world_size=world,
        batch_per_gpu=cfg.batch_per_gpu,
        grad_accum=cfg.grad_accum,
        device=device_names()[0],
        devices=device_names()[:world] if on_gpu else ["cpu"] * world,
        wall_hours=round(train_clock.seconds / 3600, 5),
        gpu_hours=round(train_clock.seconds * world / 3600, 5) if on_gpu else None,
        adapter_bytes=directory_bytes(adapter_dir),
        **flops,
        memory=memory,
        step_s=stats["step_s"],
        step_tokens=stats["step_tokens"],
        **stats["prefix"],
        **resume_fields(resume, stats, train_clock.seconds, world, on_gpu, saver),
        precision_reason=chosen.reason,
    )
    notes = [f"optimizer fallback: AdamW instead of 0/1 Adam ({fallback})"] if fallback else []
    notes += [f"precision: {chosen.warning}"] if chosen.warning else []
    if cell.model.weights == "random":
        notes.append(RANDOM_NOTE)
    data = [load_splits(task, data_dir).info.to_dict() for task in train_tasks]
    if cell.task in MIXES:
        notes.append(mix_note(MIXES[cell.task], data))
    artifacts = {} if timing_steps else {"adapter": str(adapter_dir)}
    return Outcome(Status.OK, metrics, data=tuple(data), artifacts=artifacts, notes=tuple(notes))


def resume_fields(resume, stats, train_s: float, world: int, on_gpu: bool, saver) -> dict:
    """What a resumed training adds to its record: this attempt's share is in train_s and the rates."""
    total_s = (resume or {}).get("train_s", 0.0) + train_s
    return {
        "resumed_from_step": resume["step"] if resume else None,
        "attempts": (resume or {}).get("attempts", 0) + 1,
        "train_s_all_attempts": round(total_s, 3),
        "tokens_all_attempts": stats["tokens_all"],
        "gpu_hours_all_attempts": round(total_s * world / 3600, 5) if on_gpu else None,
        "checkpoints_written": saver.written,
        "checkpoint_s": round(saver.seconds, 3),
    }


def train_loop(
    engine, encoded, cfg, total_steps: int, pad_id: int, device, flop_model=None, cell_id: str = "",
    saver: Checkpointer | None = None, stop: StopRequest | None = None, resume: dict | None = None,
) -> dict:  # fmt: skip
    """The optimizer steps. No device sync per step: tokens are counted on the host and the losses are
    reduced across ranks only at report points (10 a run) and checkpoints, so the host runs ahead and
    prepares the next batch while the device computes (profile: the per-step .item() and all_reduce).
    Per-step wall times are host clock readings for the same reason (no sync): on a CPU they are the
    steps' times; on a GPU their median over many steps is, since the host cannot run ahead by more than
    the launch queue. Per-step tokens are this rank's (the gate times single-process cells only).
    `resume` (checkpoints.load) continues a run at its step, epoch and position in the data order;
    `saver` writes checkpoints; `stop` ends the loop with a checkpoint at the next step boundary.

    cfg.loss_logits, cfg.batching and cfg.prefix_reuse switch off bench's levers for the speed ablation."""
    rank, world = dist.get_rank(), dist.get_world_size()
    lengths = [len(e.input_ids) for e in encoded]
    sliced = cfg.loss_logits == "targets" and keeps_logits(engine.module)
    batcher = BATCHERS[cfg.batching]
    reuse_off = off_reason(engine.module, cfg.prefix_reuse, cfg.lora_dropout, sliced)
    packed = sliced and packable(engine)  # how batch_loss computes a shared span
    # "always": rows of one task (one instruction) meet in a batch. Measured on the sentiment set
    # (SmolLM2 tokens, batch 16): 969 of 1,045 batches share 28 tokens instead of 54 batches, for 9% padding
    # instead of 3%. "exact" keeps the batches as they were: a new batch order is a different training.
    grouped = cfg.prefix_reuse == "always" and reuse_off is None
    groups = [e.task for e in encoded] if grouped else None
    shared_spans = []  # per micro-batch of this attempt: the tokens its rows shared (0: none)
    s = resume or {}
    own = s.get("own", {})
    step, epoch, first, curve = s.get("step", 0), s.get("epoch", 0), s.get("position", 0), s.get("curve", [])
    step_s, step_tokens, step_cpu_s = s.get("step_s", []), s.get("step_tokens", []), s.get("step_cpu_s", [])
    tokens, examples = own.get("tokens", 0), own.get("examples", 0)
    flops = FlopCount(*own["flops"]) if "flops" in own else FlopCount()  # counted on the host, like tokens
    before = (tokens, examples, flops)  # what earlier attempts counted: this attempt's share is the rest
    micro, pending, preempted = step * cfg.grad_accum, [], False
    step_start, tokens_at_step, cpu_start = time.perf_counter(), tokens, time.process_time()
    window_loss = torch.zeros((), device=device)
    report_every = max(1, total_steps // 10)
    started = time.monotonic()

    def flush() -> None:  # one collective and one sync for the steps since the last one
        nonlocal pending
        if pending:
            means = torch.stack(pending)
            dist.all_reduce(means)
            first = step - len(pending) + 1
            curve.extend([first + i, round(v / world, 5)] for i, v in enumerate(means.tolist()))
            pending = []

    if rank == 0:
        event(cell_id, "train", step, total_steps)  # the bar starts now, so its rate counts steps only
    engine.train()
    while step < total_steps and not preempted:
        mine = batcher(lengths, cfg.batch_per_gpu, cfg.seed + epoch, world, groups)[rank::world]
        for position, indices in enumerate(mine[first:], start=first):
            rows = [encoded[i] for i in indices]
            batch = make_batch(rows, pad_id, device, 0 if reuse_off else shared_span(rows))
            loss = batch_loss(engine, batch, sliced)
            engine.backward(loss)
            engine.step()
            window_loss = window_loss + loss.detach().float()
            tokens, examples, micro = tokens + batch.tokens, examples + batch.rows, micro + 1
            flops = flops + batch_flops(flop_model, rows, sliced, batch.shared, packed)
            shared_spans.append(batch.shared)
            if micro % cfg.grad_accum:
                continue
            step += 1
            now = time.perf_counter()
            step_s.append(round(now - step_start, 4))
            step_tokens.append(tokens - tokens_at_step)  # this rank's real tokens
            cpu = time.process_time()  # this process's CPU seconds (spinning OpenMP threads count too)
            step_cpu_s.append(round(cpu - cpu_start, 4))
            step_start, tokens_at_step, cpu_start = now, tokens, cpu
            pending.append(window_loss / cfg.grad_accum)
            window_loss = torch.zeros((), device=device)
            if step % report_every == 0 or step == total_steps:
                flush()
                if rank == 0:
                    progress(f"step {step}/{total_steps} loss {curve[-1][1]:.4f} epoch {epoch}")
            if rank == 0:  # the console's bar; tokens counted on this rank's host, no device sync
                rate = (tokens - before[0]) * world / max(time.monotonic() - started, 1e-9)
                last_loss = curve[-1][1] if curve else None
                event(cell_id, "train", step, total_steps, loss=last_loss, tokens_per_s=round(rate))
            faults.at("train", cell_id, f"step{step}", resumed=resume is not None)
            preempted = stop is not None and step < total_steps and stop.agreed()
            if saver is not None and (preempted or saver.due(step, total_steps)):
                flush()
                shared = {"step": step, "epoch": epoch, "position": position + 1, "curve": curve,
                          "step_s": step_s, "step_tokens": step_tokens, "step_cpu_s": step_cpu_s,
                          "train_s": s.get("train_s", 0.0) + time.monotonic() - started,
                          "attempts": s.get("attempts", 0) + 1}  # fmt: skip
                saver.write(engine, step, shared, {"tokens": tokens, "examples": examples,
                                                   "flops": list(astuple(flops))})  # fmt: skip
            if step >= total_steps or preempted:
                break
        epoch, first = epoch + 1, 0
    totals = _totals(device, step, curve, preempted, (tokens, examples, flops), before, step_s, step_tokens,
                     step_cpu_s)  # fmt: skip
    return {**totals, "prefix": prefix_fields(shared_spans, reuse_off)}


def prefix_fields(spans: list[int], off: str | None) -> dict:
    """What the record says of prefix reuse: this rank's micro-batches of this attempt."""
    shared = [n for n in spans if n]
    return {
        "prefix_reuse": bool(shared),
        "prefix_shared_batches": round(len(shared) / len(spans), 4) if spans else None,
        "prefix_shared_tokens_mean": round(sum(shared) / len(shared), 2) if shared else None,
        "prefix_reuse_note": off,
    }


def _totals(device, step, curve, preempted, counted, before, step_s, step_tokens, step_cpu_s) -> dict:
    """Summed over ranks: this attempt's tokens, examples and FLOPs, and all attempts' tokens and examples."""
    (tokens, examples, flops), (tokens0, examples0, flops0) = counted, before
    values = [tokens - tokens0, examples - examples0, *(a - b for a, b in zip(astuple(flops), astuple(flops0),
              strict=True)), tokens, examples]  # fmt: skip
    counts = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(counts)
    tokens, examples, *parts, tokens_all, examples_all = counts.tolist()
    return {
        "steps": step, "curve": curve, "tokens": tokens, "examples": int(examples),
        "flops": FlopCount(*parts), "tokens_all": tokens_all, "examples_all": int(examples_all),
        "preempted": preempted,
        "step_s": step_s, "step_tokens": step_tokens, "step_cpu_s": step_cpu_s,
    }  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
