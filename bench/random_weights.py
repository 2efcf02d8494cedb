"""`weights: random`: a real architecture (config.json only) with random weights, for resource cells.

Memory and time depend on the architecture, not on the weights, so a GPU without the weights can
still measure the paper's resource tables. The random checkpoint is built once per machine and
then loaded through the very same from_pretrained + bitsandbytes path as real weights (so the
quantization, the layers kept in 16-bit and the load itself are what a real run does). Its
tokenizer is a byte-level BPE trained on the task text: ids fit the real vocabulary, but sequence
lengths differ somewhat from Llama 3's tokenizer, which the records note.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.model_cache import build_once

CONFIGS_DIR = Path(__file__).resolve().parent / "configs"
TOKENIZER_VOCAB = 32000
NOTE = "random weights: resources only (BPE tokenizer trained on the task text, not the model's own)"


def architecture_dir(source: str) -> Path:
    """A shipped config (bench/configs/<source>) or a directory holding a config.json."""
    shipped = CONFIGS_DIR / source
    if (shipped / "config.json").is_file():
        return shipped
    local = Path(source).expanduser()
    if (local / "config.json").is_file():
        return local
    known = ", ".join(sorted(p.name for p in CONFIGS_DIR.iterdir() if p.is_dir()))
    raise FileNotFoundError(
        f"no architecture config for {source!r}: use one of {known} or a folder with config.json"
    )


def random_checkpoint(source: str, data_dir: Path) -> Path:
    arch = architecture_dir(source)
    digest = hashlib.sha256((arch / "config.json").read_bytes()).hexdigest()[:12]
    return build_once(f"random-{arch.name}-{digest}", lambda out: build(arch, out, data_dir))


def build(arch: Path, out_dir: Path, data_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from bench.tiny import corpus, train_tokenizer

    config = AutoConfig.from_pretrained(arch)
    tokenizer = train_tokenizer(corpus(data_dir), vocab_size=min(TOKENIZER_VOCAB, config.vocab_size))
    # Build where it is fastest: random init of 8B parameters takes seconds on a GPU.
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "bench-random.json").write_text(json.dumps({"architecture": str(arch), "note": NOTE}))
