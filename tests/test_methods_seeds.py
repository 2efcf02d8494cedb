"""The method and seed axes, the matrix's `compare`, and which cells get paired (all pure, no torch)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from bench.core.cell import Cell
from bench.core.comparisons import pairs
from bench.core.matrix import MatrixError, load, parse
from bench.core.methods import lora_switches, refusal

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}], "task": ["fpb"]},
}


def expand(**changes):
    return parse({**BASE, **changes}, Path("m.yaml"))


def with_axes(**axes):
    return expand(axes={**BASE["axes"], **axes}, base=True)


def test_method_and_seed_axes_make_cells_named_by_both():
    m = with_axes(method=["lora", "dora", "rslora"], seed=[1, 2])
    trained = [c for c in m.cells if not c.is_base]
    assert len(trained) == 2 * 3 * 2 and len(m.cells) == len(trained) + 1  # one base row whatever the seed
    ids = {c.id for c in trained}
    assert "tiny__fpb__4bit-r4-dora__1gpu__eval8bit__s2" in ids
    assert "tiny__fpb__8bit-r8__1gpu__eval8bit__s1" in ids
    dora = next(c for c in trained if c.id == "tiny__fpb__4bit-r4-dora__1gpu__eval8bit__s2")
    assert (dora.train.method, dora.train.seed) == ("dora", 2)
    assert len({c.key for c in m.cells}) == len(m.cells)


def test_matrices_without_the_axes_keep_their_keys_and_ids():
    plain = expand().cells
    for cell in plain:
        assert "method" not in cell.to_dict()["train"] and "variant" not in cell.to_dict()
        assert "dora" not in cell.id and not cell.id.endswith("__s42")
    # matrices/ci.yaml as it was when its baseline was written, before these axes: its keys still match
    old_ci = {
        "name": "ci", "models": {"smollm2": {"source": "smollm2-135m-instruct"}},
        "axes": {"model": ["smollm2"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"], "gpus": [1],
                 "eval_bits": [16]},
        "base": True,
        "train": {"max_steps": 16, "batch_per_gpu": 8, "max_seq_len": 256, "lr": 0.0005, "warmup_steps": 2,
                  "optimizer": "adamw", "time_limit_s": 1200},
        "eval": {"limit": 100, "batch_size": 20, "scorer": "strict", "time_limit_s": 1200},
    }  # fmt: skip
    ci = {c.id: c.key for c in parse(old_ci, Path("ci.yaml")).cells}
    assert ci["smollm2__fpb__4bit-r4__1gpu__eval16bit"] == "2bffeb7b8cdd9e5f"
    assert ci["smollm2__fpb__base__1gpu__eval16bit"] == "ba6d50af44d58f6a"


def test_cells_round_trip_through_records_old_and_new():
    dora = next(c for c in with_axes(method=["dora"], seed=[3]).cells if not c.is_base)
    assert Cell.from_dict(dora.to_dict()) == dora
    old = next(c for c in expand().cells)
    data = old.to_dict()
    assert Cell.from_dict(data).train.method == "lora" and Cell.from_dict(data).key == old.key


def test_batch_and_seed_together():
    cell = next(c for c in with_axes(batch=[4], seed=[7]).cells if not c.is_base)
    assert cell.id.endswith("__b4__s7") and cell.train.batch_per_gpu == 4 and cell.train.seed == 7


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"axes": {**BASE["axes"], "method": ["dorra"]}}, "axes.method", "did you mean 'dora'"),
        ({"axes": {**BASE["axes"], "seed": [-1]}}, "axes.seed", "whole number >= 0"),
        ({"train": {"method": "qlora"}}, "train.method", "unknown LoRA method 'qlora'"),
        ({"compare": {"a": {}}}, "compare", "must be a list"),
        ({"compare": [{"a": {"bits": 4}}]}, "compare[0]", "needs 'a' and 'b'"),
        ({"compare": [{"a": {"rnak": 4}, "b": {"bits": 8}}]}, "compare[0].a.rnak", "did you mean 'rank'"),
        ({"compare": [{"a": {"bits": 4}, "b": {"bits": 8}, "margin": -1}]}, "compare[0].margin", "positive"),
        ({"compare": [{"a": {"bits": 4}, "b": {"bits": 16}}]}, "compare[0]", "pairs no two cells"),
    ],
)
def test_mistakes_name_the_file_key_and_fix(changes, key, words):
    with pytest.raises(MatrixError) as err:
        expand(**changes)
    assert f"m.yaml: key '{key}'" in str(err.value) and words in str(err.value)


def test_pairs_every_adapter_with_its_base_and_by_default_with_the_first_configuration():
    cells = with_axes(method=["lora", "dora"]).cells
    found = [(p.kind, p.a.id.split("__")[2], p.b.id.split("__")[2]) for p in pairs(cells)]
    assert found == [
        ("vs base", "4bit-r4", "base"), ("vs base", "4bit-r4-dora", "base"),
        ("vs base", "8bit-r8", "base"), ("vs base", "8bit-r8-dora", "base"),
        ("default", "4bit-r4-dora", "4bit-r4"), ("default", "8bit-r8", "4bit-r4"),
        ("default", "8bit-r8-dora", "4bit-r4"),
    ]  # fmt: skip


def test_named_comparisons_pair_seed_with_seed_and_carry_the_margin():
    m = expand(
        axes={**BASE["axes"], "seed": [1, 2]},
        compare=[{"a": {"bits": 4, "rank": 4}, "b": {"bits": 8, "rank": 8}, "margin": 2.0}],
    )
    named = [p for p in pairs(m.cells, m.comparisons) if p.kind == "named"]
    assert [(p.a.train.seed, p.b.train.seed, p.a.bits, p.b.bits, p.margin) for p in named] == [
        (1, 1, 4, 8, 2.0),
        (2, 2, 4, 8, 2.0),
    ]


def test_shipped_methods_matrices_validate_with_their_comparisons():
    for name in ("paper-2025.yaml", "small-methods.yaml"):
        m = load(REPO / "matrices" / name)
        assert m.comparisons and all(p.a.key != p.b.key for p in pairs(m.cells, m.comparisons))


def test_methods_are_peft_switches_and_the_cpu_refusal_says_which_library():
    assert lora_switches("lora") == {} and lora_switches("dora") == {"use_dora": True}
    assert lora_switches("rslora") == {"use_rslora": True}
    with pytest.raises(ValueError, match="unknown LoRA method"):
        lora_switches("vera")
    why = refusal("dora", 8, "cpu", "evaluation")
    assert why.startswith("evaluation refused") and "bitsandbytes" in why and "peft" in why
    assert refusal("dora", 4, "cpu", "training") is None and refusal("dora", None, "cpu", "training") is None
    assert refusal("rslora", 8, "cpu", "training") is None and refusal("dora", 8, "cuda", "training") is None


def test_a_method_in_the_train_defaults_names_the_configuration_too():
    cell = next(c for c in expand(train={"method": "rslora"}).cells)
    assert "-rslora__" in cell.id
    assert replace(cell, train=replace(cell.train, method="lora")).id == cell.id.replace("-rslora", "")
