"""`weights: random`: a real architecture (config.json only) with random weights, for resource cells.

Memory and time depend on the architecture, not on the weights, so a GPU without the weights can
still measure the paper's resource tables. Nothing the size of the model touches the disk: the cache
holds the config and a tokenizer only, and the weights reach transformers' own from_pretrained as a
state dict of lazy tensors, each drawn on the GPU (or CPU) at the moment the loader asks for it. So
bitsandbytes quantizes them tensor by tensor exactly as it quantizes a real checkpoint (the same
Linear4bit/Linear8bitLt layers, the same layers kept in 16-bit, the same device map), and a 70B
model (141 GB in bf16, more than the disk of a lent GPU machine) loads in 4-bit on one 80 GB GPU.
The tokenizer is a byte-level BPE trained on the task text: ids fit the real vocabulary, but
sequence lengths differ somewhat from Llama 3's tokenizer, which the records note.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.core.cell import ModelSpec
from bench.models import CONFIGS_DIR
from bench.models.model_cache import build_once

TOKENIZER_VOCAB = 32000
NOTE = "random weights: resources only (BPE tokenizer trained on the task text, not the model's own)"
MARKER = "bench-random.json"  # provenance in the built folder: its weights come from random_state_dict()


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


def resolve(spec: ModelSpec, data_dir: Path) -> Path:
    return random_model_dir(spec.source, data_dir)


def random_model_dir(source: str, data_dir: Path) -> Path:
    """A folder with the architecture's config, a generation config and a tokenizer: no weights."""
    arch = architecture_dir(source)
    digest = hashlib.sha256((arch / "config.json").read_bytes()).hexdigest()[:12]
    return build_once(f"random-{arch.name}-{digest}", lambda out: build(arch, out, data_dir))


def build(arch: Path, out_dir: Path, data_dir: Path) -> None:
    from transformers import AutoConfig, GenerationConfig

    from bench.models.tiny import corpus, train_tokenizer

    config = AutoConfig.from_pretrained(arch)
    tokenizer = train_tokenizer(corpus(data_dir), vocab_size=min(TOKENIZER_VOCAB, config.vocab_size))
    config.save_pretrained(out_dir)
    generation = GenerationConfig(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    generation.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MARKER).write_text(json.dumps({"architecture": str(arch), "note": NOTE}))


class RandomTensor:
    """Stands where transformers' loader expects a lazy safetensors slice: the tensor is drawn only when
    the loader indexes it (`slice[...]`), on the GPU when there is one (seconds for 70B, where the CPU
    needs minutes), and the loader then casts, places and quantizes it like a tensor read from disk."""

    def __init__(self, shape: tuple[int, ...], seed: int, std: float):
        self.shape, self.seed, self.std = shape, seed, std

    def get_shape(self) -> list[int]:
        return list(self.shape)

    def __getitem__(self, index):
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        if len(self.shape) == 1:  # norm scales: ones, as a trained model's are near 1, keeps bf16 finite
            return torch.ones(self.shape, dtype=torch.bfloat16, device=device)[index]
        generator = torch.Generator(device).manual_seed(self.seed)
        tensor = torch.empty(self.shape, dtype=torch.bfloat16, device=device)
        return tensor.normal_(0.0, self.std, generator=generator)[index]


def load_random(folder: str, **load_kwargs):
    """from_pretrained on the folder's config with random_state_dict() as the weights."""
    from transformers import AutoConfig, GenerationConfig

    config = AutoConfig.from_pretrained(folder)
    model_class, state_dict = random_state_dict(config)
    model = model_class.from_pretrained(None, config=config, state_dict=state_dict, **load_kwargs)
    model.generation_config = GenerationConfig.from_pretrained(folder)
    return model


def random_state_dict(config) -> tuple[type, dict[str, RandomTensor]]:
    """The model class for `config` and one lazy random tensor per entry of its state dict."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # shapes and names only: no memory
        skeleton = AutoModelForCausalLM.from_config(config)
    std = getattr(config, "initializer_range", 0.02)
    state = {
        name: RandomTensor(tuple(tensor.shape), seed, std)
        for seed, (name, tensor) in enumerate(skeleton.state_dict().items())
    }
    return type(skeleton), state
