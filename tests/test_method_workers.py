"""The workers' side of the method axis: peft's switches build the adapter, the saved adapter is a plain
peft one, and the combination that fails on CPU is refused before any model work."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bench.core.matrix import parse

MATRIX = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 16, "rank": 4}], "method": ["lora", "dora", "rslora"],
             "task": ["fpb"], "eval_bits": [16]},
}  # fmt: skip


def cells_by_method() -> dict:
    return {c.train.method: c for c in parse(MATRIX, Path("m.yaml")).cells}


@pytest.mark.parametrize("method", ["dora", "rslora"])
def test_each_method_trains_through_peft_and_saves_an_adapter_peft_loads(method, tiny_dir, tmp_path):
    import json

    from peft import PeftModel

    from bench.models.loading import load_model
    from bench.workers.train import build_model

    cell = cells_by_method()[method]
    model = build_model(cell, str(tiny_dir), torch.device("cpu"))
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    model(input_ids=ids, labels=ids).loss.backward()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert (config["use_dora"], config["use_rslora"]) == (method == "dora", method == "rslora")
    base = load_model(str(tiny_dir), cell.model, 16, torch.float32, {"": "cpu"})
    loaded = PeftModel.from_pretrained(base, tmp_path)
    assert loaded.peft_config["default"].use_dora == (method == "dora")


def test_dora_on_an_8bit_base_is_refused_on_cpu_before_the_adapter_loads(tmp_path):
    from bench.workers.evaluate import with_adapter

    dora = replace(cells_by_method()["dora"], eval_bits=8)
    with pytest.raises(ValueError, match="evaluation refused: DoRA on an 8-bit .* bitsandbytes"):
        with_adapter(None, dora, tmp_path / "adapter")
