"""Predicted GPU memory of a LoRA / QLoRA training cell and of 8-bit evaluation, from config.json alone.

Pure: no torch, no transformers. `config` is the plain dict of a Llama-style config.json (dense decoder,
SwiGLU MLP, grouped-query attention, RMSNorm); sizes are per GPU, in bytes. Assumptions (tests/test_memory.py
checks weights against bitsandbytes, LoRA counts against peft, activations against autograd on CPU):
- Weights: NF4 is 0.5 byte/param plus an absmax per 64-weight block: with double quant an int8 one and a fp32
  one per 256 blocks (~0.127 bit/param), else fp32. LLM.int8 is 1 byte/param plus a fp32 scale per output
  row. Only decoder linear layers are quantized: embeddings, norms and lm_head keep `compute_bytes`.
- LoRA: rank * (in + out) per targeted module per layer; fp32 params and gradients (peft's default), and a
  flat all-reduce copy of the gradients when gpus > 1.
- Optimizer, per LoRA param: AdamW two fp32 moments (8 bytes); DeepSpeed's 0/1 Adam also a fp32
  momentum_accumulator and worker_error plus a 1/gpus server_error chunk (16 + 4/gpus). ZeRO 1 splits
  optimizer states over GPUs, 2 also gradients, 3 also LoRA and 16-bit base weights (never bnb ones).
- Activations and logits: `layer_activation_bytes`, `logits_bytes_per_token`. Attention is SDPA (O(seq)).
- Overhead: CUDA context (~0.5 GiB, H100 + CUDA 12) plus 5% of allocated bytes for allocator fragmentation.
  torch.cuda.max_memory_allocated sees neither: compare it with `allocated_per_gpu`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.core.architecture import LINEAR_MODULES, Shape, shape

GIB = 2**30
CUDA_CONTEXT_BYTES = 512 * 2**20
FRAGMENTATION = 0.05
NF4_BLOCK = 64  # bitsandbytes Params4bit default blocksize
NESTED_BLOCK = 256  # double quant: one fp32 absmax per 256 int8 absmax values
NF4_TENSOR_BYTES = 4 * (16 + 256 + 1)  # per quantized tensor: fp32 NF4 code, int8-absmax code, offset
LORA_BYTES = 4  # peft keeps adapter weights in fp32
OPTIMIZER_BYTES = {"adamw": 8, "adam": 8, "adamw_8bit": 2, "sgd": 0}  # per LoRA param; 0/1 Adam below


@dataclass(frozen=True)
class MemoryPrediction:
    """Per-GPU bytes. Peak = weights + the larger of the load-time transient and the working set."""

    weights: int
    lora: int = 0
    gradients: int = 0
    optimizer: int = 0
    activations: int = 0  # decoder layers (training), or one layer's prefill (eval)
    logits: int = 0
    kv_cache: int = 0
    load_transient: int = 0  # extra bytes while prepare_model_for_kbit_training casts weights to fp32
    gpus: int = 1

    @property
    def working(self) -> int:
        return self.lora + self.gradients + self.optimizer + self.activations + self.logits + self.kv_cache

    @property
    def allocated_per_gpu(self) -> int:
        """What torch.cuda.max_memory_allocated would report on each GPU."""
        return self.weights + max(self.load_transient, self.working)

    @property
    def overhead(self) -> int:
        return CUDA_CONTEXT_BYTES + int(FRAGMENTATION * self.allocated_per_gpu)

    @property
    def total_per_gpu(self) -> int:
        return self.allocated_per_gpu + self.overhead

    @property
    def total_all_gpus(self) -> int:
        return self.total_per_gpu * self.gpus

    def fits(self, gpu_bytes: int) -> bool:
        return self.total_per_gpu <= gpu_bytes


def _targets(s: Shape, target_modules) -> dict[str, tuple[int, int]]:
    linears = s.linears()
    unknown = [m for m in target_modules if m not in linears]
    if unknown:
        raise ValueError(f"unknown LoRA target module(s) {unknown}: known are {', '.join(LINEAR_MODULES)}")
    return {m: linears[m] for m in dict.fromkeys(target_modules)}


def trainable_params(config: dict, rank: int, target_modules) -> int:
    """LoRA parameters: A is rank x in, B is out x rank, per targeted module per layer."""
    s = shape(config)
    per_layer = sum(rank * (d_in + d_out) for d_in, d_out in _targets(s, target_modules).values())
    return per_layer * s.layers


def parameter_count(config: dict) -> int:
    """All base-model parameters, as summing numel over the model built from this config would give."""
    s = shape(config)
    return s.layers * _linear_params_per_layer(s) + _unquantized_params(s)


def _linear_params_per_layer(s: Shape) -> int:
    return sum(d_in * d_out for d_in, d_out in s.linears().values())


def _unquantized_params(s: Shape) -> int:
    """Embeddings, lm_head (unless tied) and the RMSNorm weights: what bitsandbytes leaves alone."""
    norms = (2 * s.layers + 1) * s.hidden
    return s.vocab * s.hidden * (1 if s.tied else 2) + norms


def linear_weight_bytes(d_in: int, d_out: int, bits: int, compute_bytes: int, double_quant=True) -> int:
    """Bytes of one linear layer's weight as bitsandbytes stores it at `bits` (16 = not quantized)."""
    params = d_in * d_out
    if bits == 4:
        blocks = math.ceil(params / NF4_BLOCK)
        if double_quant:
            return params // 2 + blocks + 4 * math.ceil(blocks / NESTED_BLOCK) + NF4_TENSOR_BYTES
        return params // 2 + 4 * blocks + 4 * 16
    if bits == 8:
        return params + 4 * d_out  # int8 weights + one fp32 scale per output row (SCB)
    if bits == 16:
        return params * compute_bytes
    raise ValueError(f"bits must be 4, 8 or 16, not {bits}")


def weight_bytes(config: dict, bits: int, compute_bytes: int = 2, double_quant: bool = True) -> int:
    """All model weights on one device when the whole model sits there."""
    return sum(_weight_parts(shape(config), bits, compute_bytes, double_quant))


def _weight_parts(s: Shape, bits: int, compute_bytes: int, double_quant: bool = True) -> tuple[int, int]:
    """(decoder linear layers, everything bitsandbytes leaves alone), in bytes."""
    per_layer = sum(
        linear_weight_bytes(*dims, bits, compute_bytes, double_quant) for dims in s.linears().values()
    )
    return s.layers * per_layer, _unquantized_params(s) * compute_bytes


def layer_activation_bytes(s: Shape, bits: int, rank: int, target_modules, a: int) -> int:
    """Bytes per token that autograd keeps for one decoder layer in training (a = compute dtype bytes).

    Tallied from the tensors each op saves for backward in transformers' Llama + peft LoRA, frozen base:
    - 2 RMSNorms: each keeps its input upcast to fp32 (4h); their outputs feed frozen weights (not kept).
    - per LoRA target (lora_dropout > 0, the paper's 0.1): dropout's bool mask (1 byte) and its fp32
      output (peft casts adapter inputs to fp32) kept by lora_A, and lora_A's rank-sized output kept by
      lora_B. (CPU dropout keeps a fp32 mask instead.)
    - attention: rotated q and k, v, the SDPA output (also o_proj's input) and its fp32 logsumexp.
    - MLP: gate and up outputs and SiLU's output (3 x intermediate).
    - 8-bit only: bitsandbytes' MatMul8bitLt keeps its input for backward: the two norm outputs and
      down_proj's input (o_proj's input shares the SDPA output's storage).
    """
    h, i = s.hidden, s.intermediate
    lora = sum(
        (LORA_BYTES + 1) * d_in + LORA_BYTES * rank for d_in, _ in _targets(s, target_modules).values()
    )
    attention = a * (2 * s.q_dim + 2 * s.kv_dim) + 4 * s.heads
    total = 2 * 4 * h + lora + attention + 3 * a * i
    if bits == 8:
        total += a * (2 * h + i)
    return total


def logits_bytes_per_token(vocab: int) -> int:
    """Peak of the loss head: the fp32 log_softmax output plus, in backward, its gradient and the gradient
    of its input, all fp32 (12 * vocab; ~1.5 MB per token for Llama 3's 128k vocabulary, which dominates
    with checkpointing). The bf16 lm_head output and its fp32 copy are freed by then, as long as the
    training loop keeps only `.loss` of the model's output, as bench/workers/train.py and HF's Trainer do."""
    return 12 * vocab


def layer_backward_bytes(s: Shape, a: int) -> int:
    """Gradients alive inside one layer's backward: of the MLP's three intermediate tensors and of the
    layer's input and output (measured on CPU: the peak of a checkpointed layer's recompute)."""
    return a * (3 * s.intermediate + 2 * s.hidden)


def _optimizer_bytes_per_param(optimizer: str, gpus: int) -> float:
    if optimizer == "zero_one_adam":
        return 16 + 4 / gpus
    if optimizer not in OPTIMIZER_BYTES:
        known = ", ".join([*OPTIMIZER_BYTES, "zero_one_adam"])
        raise ValueError(f"unknown optimizer {optimizer!r}: known are {known}")
    return OPTIMIZER_BYTES[optimizer]


def predict_training(
    config: dict,
    bits: int,
    rank: int,
    target_modules,
    batch_per_gpu: int,
    seq_len: int,
    gradient_checkpointing: bool,
    optimizer: str,
    zero_stage: int,
    gpus: int,
    compute_bytes: int = 2,
    kbit_upcast: bool = False,
) -> MemoryPrediction:
    """Peak per-GPU memory of one LoRA training step (DDP: every GPU holds the whole model).

    compute_bytes: bytes of activations and of the weights bitsandbytes leaves alone while training.
    2 (bf16/fp16): a 16-bit model, or DeepSpeed's fp16/bf16 mode, which casts every weight to half.
    4 (fp32): CPU, or prepare_model_for_kbit_training (norms, embeddings, lm_head to fp32; the fp32
    residual then makes bnb layers return fp32) with DeepSpeed in fp32,
    as bench/workers/train.py runs 4/8-bit.
    kbit_upcast: prepare_model_for_kbit_training ran at load: while it casts, every non-quantized weight
    is fp32 and the largest is held in bf16 and fp32 at once (the paper's code did this for every row).
    """
    s = shape(config)
    tokens = batch_per_gpu * seq_len
    n_lora = trainable_params(config, rank, target_modules)
    split = _zero_split(zero_stage, gpus)
    linear, unquantized = _weight_parts(s, bits, compute_bytes)
    if bits == 16:
        linear //= split(3)  # ZeRO 3 partitions frozen 16-bit weights too, never bnb-quantized ones
    per_layer = layer_activation_bytes(s, bits, rank, target_modules, compute_bytes)
    logits = tokens * logits_bytes_per_token(s.vocab)
    if gradient_checkpointing:
        # Reentrant checkpointing (torch's default, which prepare_model_for_kbit_training gets): each
        # layer's input stays; in backward one layer is recomputed after the logits' gradients are freed,
        # so it only counts where it exceeds the logits' peak. (Non-reentrant would also keep every 8-bit
        # layer's inputs: bitsandbytes holds them on ctx, out of the checkpoint's reach.)
        recompute = tokens * (per_layer + layer_backward_bytes(s, compute_bytes))
        activations = tokens * s.layers * compute_bytes * s.hidden + max(0, recompute - logits)
    else:
        activations = tokens * s.layers * per_layer
    return MemoryPrediction(
        weights=linear + unquantized,
        lora=LORA_BYTES * n_lora // split(3),
        gradients=LORA_BYTES * n_lora * (2 if gpus > 1 else 1) // split(2),
        optimizer=int(_optimizer_bytes_per_param(optimizer, gpus) * n_lora) // split(1),
        activations=activations,
        logits=logits,
        load_transient=_upcast_transient(s, bits, compute_bytes) if kbit_upcast else 0,
        gpus=gpus,
    )


def _zero_split(zero_stage: int, gpus: int):
    """How many ways ZeRO at `zero_stage` splits what stage `stage` partitions (1 = not split)."""
    return lambda stage: gpus if zero_stage >= stage and gpus > 1 else 1


def _upcast_transient(s: Shape, bits: int, compute_bytes: int) -> int:
    """Bytes above `weights` while prepare_model_for_kbit_training casts bf16 weights to fp32."""
    unquantized = _unquantized_params(s) + (s.layers * _linear_params_per_layer(s) if bits == 16 else 0)
    largest = s.vocab * s.hidden  # embed_tokens / lm_head: the largest tensor of a Llama
    return unquantized * (4 - compute_bytes) + 2 * largest


def predict_eval(
    config: dict,
    eval_bits: int,
    batch_size: int,
    seq_len: int,
    max_new_tokens: int,
    gpus: int,
    compute_bytes: int = 2,
) -> MemoryPrediction:
    """Per-GPU memory of generation with the layers split over `gpus` (naive pipeline parallelism).

    Weights and KV cache divide evenly over the GPUs (a balanced device map). Prefill holds one layer's
    transient activations (q, k, v, attention output, gate, up, SiLU) for the prompt; generate keeps the
    logits of the last position only, in fp32.
    """
    s = shape(config)
    positions = batch_size * (seq_len + max_new_tokens)
    kv = 2 * s.layers * s.kv_dim * compute_bytes * positions
    prefill = batch_size * seq_len * compute_bytes * (2 * s.q_dim + 2 * s.kv_dim + 3 * s.intermediate)
    return MemoryPrediction(
        weights=math.ceil(weight_bytes(config, eval_bits, compute_bytes) / gpus),
        activations=prefill,
        logits=batch_size * s.vocab * 4,
        kv_cache=math.ceil(kv / gpus),
        gpus=gpus,
    )


def format_gb(n_bytes: int | float) -> str:
    """GiB (2**30 bytes): the unit of torch.cuda.max_memory_allocated / 1024**3, which the paper calls GB."""
    return f"{n_bytes / GIB:.2f} GiB"
