"""Worker-side model loading: resolve a model source, quantize with bitsandbytes, count layers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch

from bench.core.cell import ModelSpec
from bench.core.precision import Precision, choose, cpu_facts
from bench.models.sources import kind_of

QUANTIZED_CLASSES = ("Linear4bit", "Linear8bitLt")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_source(spec: ModelSpec, data_dir: Path) -> str:
    """A local directory (built, packaged or given), or a hub id for transformers to fetch (no hub here)."""
    return kind_of(spec).resolve(spec, data_dir)


def resolve_local(spec: ModelSpec, data_dir: Path) -> str:
    return str(Path(spec.source).expanduser().resolve())


def resolve_hub(spec: ModelSpec, data_dir: Path) -> str:
    return spec.source


def compute_precision(device: torch.device, requested: str = "bf16") -> Precision:
    """The dtype this device computes `requested` in, and why (bench.core.precision decides)."""
    flags = cpu_facts()[1] if device.type == "cpu" else set()
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)  # a private op: may go away
    mkldnn = bool(check()) if device.type == "cpu" and check is not None else None
    return choose(requested, device.type, flags, mkldnn)


def compute_dtype(device: torch.device, precision: str = "bf16") -> torch.dtype:
    return DTYPES[compute_precision(device, precision).dtype]


def quantization_config(bits: int, dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    if bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return None


def load_tokenizer(source: str, spec: ModelSpec):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        source, revision=spec.revision, trust_remote_code=spec.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(source: str, spec: ModelSpec, bits: int, dtype: torch.dtype, device_map):
    """from_pretrained with bitsandbytes at `bits`; random-weight folders feed it lazy random tensors."""
    from transformers import AutoModelForCausalLM

    quantization = quantization_config(bits, dtype)
    if spec.weights == "random":  # `source` is random_model_dir(): a config and a tokenizer only
        from bench.models.random_weights import load_random

        return load_random(source, dtype=dtype, quantization_config=quantization, device_map=device_map)
    return AutoModelForCausalLM.from_pretrained(
        source,
        revision=spec.revision,
        trust_remote_code=spec.trust_remote_code,
        dtype=dtype,
        quantization_config=quantization,
        device_map=device_map,
    )


def quantized_linear_counts(model) -> dict[str, int]:
    # Only bitsandbytes' own layers: peft's LoRA wrappers around them reuse the class names.
    counts = Counter(
        type(m).__name__ for m in model.modules() if type(m).__module__.startswith("bitsandbytes")
    )
    return {name: counts[name] for name in QUANTIZED_CLASSES if counts[name]}


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
