"""The axis registry: any setting is an axis, --set overrides, compare on every axis, keys stay put."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.core import axes
from bench.core.comparisons import axis_values, pairs
from bench.core.matrix import MatrixError, load, parse

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "name": "m",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "train": {"max_steps": 2},
}


def expand(sets=None, **changes):
    return parse({**BASE, **changes}, Path("m.yaml"), sets)


def test_every_committed_matrix_keeps_its_cell_ids_and_keys():
    """tests/fixtures/matrix_keys.json holds every committed matrix's (id, key) pairs as they were
    before the axis registry: records already written must stay valid. A matrix changed on purpose
    is re-pinned deliberately (and says so in its commit)."""
    pinned = json.loads((REPO / "tests" / "fixtures" / "matrix_keys.json").read_text())
    committed = sorted(p.name for p in (REPO / "matrices").glob("*.yaml"))
    assert sorted(pinned) == committed, "a new matrix: add its keys to the fixture"
    for name, cells in pinned.items():
        matrix = load(REPO / "matrices" / name)
        assert [[c.id, c.key] for c in matrix.cells] == cells, name


def test_lr_by_lora_alpha_sweep_sets_each_cell_and_names_it():
    m = expand(axes={**BASE["axes"], "lr": [1.0e-4, "2e-4"], "lora.alpha": [16, 32]})
    assert len(m.cells) == 4
    got = {(c.train.lr, c.train.lora_alpha) for c in m.cells}
    assert got == {(1e-4, 16), (1e-4, 32), (2e-4, 16), (2e-4, 32)}
    ids = {c.id for c in m.cells}
    assert "tiny__fpb__4bit-r4__1gpu__eval8bit__lr0.0002__lora_alpha16" in ids
    assert m.axes[-2:] == ("train.lr", "train.lora_alpha")
    assert len({c.key for c in m.cells}) == 4


def test_compare_on_lr_pairs_cells_that_differ_only_in_lr():
    m = expand(
        axes={**BASE["axes"], "lr": [1.0e-4, 2.0e-4], "lora_alpha": [16, 32]},
        compare=[{"a": {"lr": 2.0e-4}, "b": {"lr": 1.0e-4}}],
    )
    named = [p for p in pairs(m.cells, m.comparisons) if p.kind == "named"]
    assert len(named) == 2  # one pair per alpha, alpha with alpha
    for pair in named:
        assert (pair.a.train.lr, pair.b.train.lr) == (2e-4, 1e-4)
        assert pair.a.train.lora_alpha == pair.b.train.lora_alpha


def test_compare_on_protocol_and_on_nodes_pairs_cells():
    m = expand(
        axes={**BASE["axes"], "protocol": ["bench", "finlora-2025"]},
        compare=[{"a": {"protocol": "finlora-2025"}, "b": {"protocol": "bench"}}],
    )
    named = [p for p in pairs(m.cells, m.comparisons) if p.kind == "named"]
    assert [(p.a.eval.protocol, p.b.eval.protocol) for p in named] == [("finlora-2025", "bench")]
    m = expand(
        axes={**BASE["axes"], "gpus": [2], "nodes": [1, 2]},
        compare=[{"a": {"nodes": 2}, "b": {"nodes": 1}}],
    )
    assert [(p.a.nodes, p.b.nodes) for p in pairs(m.cells, m.comparisons) if p.kind == "named"] == [(2, 1)]


def test_default_comparisons_never_pair_cells_under_different_protocols():
    m = expand(
        axes={**BASE["axes"], "quant": [{"bits": 4, "rank": 4, "protocol": "finlora-2025"},
                                         {"bits": 8, "rank": 8, "protocol": "bench"}]},  # fmt: skip
    )
    assert [p for p in pairs(m.cells) if p.kind == "default"] == []


def test_cells_carry_their_axis_values_and_the_report_reads_them():
    m = expand(axes={**BASE["axes"], "batch": [4], "train.warmup_steps": [3]}, base=True)
    adapter = next(c for c in m.cells if not c.is_base)
    base = next(c for c in m.cells if c.is_base)
    assert dict(adapter.axes)["batch"] == 4 and axis_values(adapter)["train.warmup_steps"] == 3
    assert dict(base.axes)["batch"] is None  # a base row has no training
    assert adapter.train.warmup_steps == 3


def test_set_overrides_every_cell_after_defaults_and_overrides():
    m = expand(
        sets={"train.lr": "2e-4", "lora.alpha": 8, "eval.limit": 5},
        overrides=[{"when": {"task": "fpb"}, "train": {"lr": 1.0e-3}}],
    )
    (cell,) = m.cells
    assert (cell.train.lr, cell.train.lora_alpha, cell.eval.limit) == (2e-4, 8, 5)
    assert cell.key != expand().cells[0].key and cell.id == expand().cells[0].id


@pytest.mark.parametrize(
    ("sets", "changes", "words"),
    [
        ({"bits": 8}, {}, "key '--set bits': is an axis of this matrix"),
        ({"lr": 1e-4}, {"axes": {**BASE["axes"], "lr": [1e-4, 2e-4]}}, "is an axis of this matrix"),
        ({"train.lrr": 1}, {}, "did you mean"),
        ({"train.lr": "fast"}, {}, "must be a number, not 'fast'"),
        ({"train.lr": float("nan")}, {}, "must be a finite number"),
    ],
)
def test_set_mistakes_name_the_setting_and_the_fix(sets, changes, words):
    with pytest.raises(MatrixError) as err:
        expand(sets=sets, **changes)
    assert words in str(err.value)


@pytest.mark.parametrize(
    ("axes_change", "key", "words"),
    [
        ({"quant": [{"bits": 4.0, "rank": 4}]}, "axes.quant[0].bits", "4.0 is not one of 4, 8, 16"),
        ({"task": [["fpb"]]}, "axes.task", "must be a task name"),
        ({"model": [["tiny"]]}, "axes.model", "must be a model name"),
        ({"protocol": [["bench"]]}, "axes.protocol", "must be a protocol name"),
        ({"lr": [float("nan")]}, "axes.lr", "must be a finite number"),
        ({"train.epochs": [float("inf")]}, "axes.train.epochs", "must be a finite number"),
        ({"lora.target_modules": ["q_proj"]}, "axes.lora.target_modules", "must be a list of names"),
        ({"lrr": [1.0]}, "axes.lrr", "did you mean 'lr'?"),
    ],
)
def test_axis_values_of_the_wrong_shape_are_refused(axes_change, key, words):
    with pytest.raises(MatrixError) as err:
        expand(axes={**BASE["axes"], **axes_change})
    assert f"key '{key}'" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize("margin", [float("nan"), float("inf"), -1, 0])
def test_a_compare_margin_must_be_a_finite_positive_number(margin):
    with pytest.raises(MatrixError, match="compare.0..margin"):
        expand(axes={**BASE["axes"], "lr": [1e-4, 2e-4]},
               compare=[{"a": {"lr": 2e-4}, "b": {"lr": 1e-4}, "margin": margin}])  # fmt: skip


def test_target_modules_as_an_axis():
    m = expand(axes={**BASE["axes"], "lora.target_modules": [["q_proj", "v_proj"], ["q_proj"]]})
    assert {c.train.target_modules for c in m.cells} == {("q_proj", "v_proj"), ("q_proj",)}
    assert any(c.id.endswith("__target_modulesq_proj+v_proj") for c in m.cells)


def test_every_train_and_eval_setting_is_an_axis():
    from dataclasses import fields

    from bench.core.cell import EvalConfig, TrainConfig

    covered = {a.target for a in axes.AXES.values()}
    for where, cls in (("train", TrainConfig), ("eval", EvalConfig)):
        assert {(where, f.name) for f in fields(cls)} <= covered


def test_set_from_the_command_line(tmp_path, capsys):
    matrix = tmp_path / "m.yaml"
    matrix.write_text(json.dumps(BASE))
    assert main(["plan", str(matrix), "--results-dir", str(tmp_path / "r")]) == 0
    plain = capsys.readouterr().out
    assert main(["plan", str(matrix), "--results-dir", str(tmp_path / "r"),
                 "--set", "train.lr=2e-4", "--set", "lora.alpha=32"]) == 0  # fmt: skip
    changed = capsys.readouterr().out
    key = load(matrix, {"train.lr": 2e-4, "lora.alpha": 32}).cells[0].key
    assert key in changed and key not in plain
    assert main(["plan", str(matrix), "--set", "bits=8"]) == 2
    assert "is an axis of this matrix" in capsys.readouterr().err


def test_prompt_format_as_an_axis_keeps_the_raw_cells_keys():
    both = expand(axes={**BASE["axes"], "prompt_format": ["raw", "chat"]})
    raw, chat = sorted(both.cells, key=lambda c: c.prompt_format != "raw")
    assert raw.key == expand().cells[0].key and raw.id == expand().cells[0].id
    assert chat.prompt_format == "chat" and chat.id.endswith("__chat") and chat.key != raw.key
    top = expand(prompt_format="chat").cells[0]
    assert top.key == chat.key


def test_a_rank_above_the_adapted_layers_size_is_refused_before_anything_loads(tmp_path, capsys):
    matrix = tmp_path / "m.yaml"
    huge = {**BASE["axes"], "quant": [{"bits": 4, "rank": 1000000000}]}
    matrix.write_text(json.dumps({**BASE, "axes": huge}))
    assert main(["plan", str(matrix), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "key 'rank': 1000000000 is larger than the smallest side" in err and "Traceback" not in err
