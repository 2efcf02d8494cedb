from pathlib import Path

import pytest

from bench.core.matrix import MatrixError, load, parse

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}], "task": ["fpb"]},
}


def expand(**changes):
    return parse({**BASE, **changes}, Path("m.yaml"))


@pytest.mark.parametrize("path", sorted((REPO / "matrices").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_matrix_validates(path):
    matrix = load(path)
    assert matrix.cells
    assert len({c.key for c in matrix.cells}) == len(matrix.cells)


def test_linked_axes_move_together_and_defaults_fill_gpus_and_eval_bits():
    cells = expand().cells
    assert sorted((c.bits, c.rank) for c in cells) == [(4, 4), (8, 8)]
    assert {(c.gpus, c.eval_bits) for c in cells} == {(1, 8)}


def test_cartesian_product_base_rows_and_exclusions():
    m = expand(
        axes={**BASE["axes"], "task": ["fpb", "ner"], "gpus": [1, 2]},
        base=True,
        exclude=[{"task": "ner", "gpus": 2}],
    )
    trained = [c for c in m.cells if not c.is_base]
    base = [c for c in m.cells if c.is_base]
    assert len(trained) == 2 * 2 * 2 - 2  # (quant × task × gpus) minus ner on 2 GPUs
    assert {(c.task, c.gpus) for c in base} == {("fpb", 1), ("fpb", 2), ("ner", 1)}
    assert all(c.train is None and c.phases() == ("eval",) for c in base)


def test_overrides_apply_per_model_and_task_in_order():
    m = expand(
        axes={**BASE["axes"], "task": ["fpb", "xbrl"]},
        train={"batch_per_gpu": 16, "epochs": 4},
        overrides=[
            {"when": {"task": "xbrl"}, "train": {"batch_per_gpu": 2, "epochs": 1}},
            {"when": {"task": ["xbrl"], "bits": 8}, "train": {"grad_accum": 2}, "eval": {"limit": 5}},
        ],
    )
    by = {(c.task, c.bits): c for c in m.cells}
    assert by[("fpb", 4)].train.batch_per_gpu == 16 and by[("fpb", 4)].train.epochs == 4.0
    assert by[("xbrl", 4)].train.batch_per_gpu == 2 and by[("xbrl", 4)].train.grad_accum == 1
    assert by[("xbrl", 8)].train.grad_accum == 2 and by[("xbrl", 8)].eval.limit == 5


def test_any_field_change_makes_a_new_key_and_ids_are_readable():
    a = expand(train={"lr": 1e-4}).cells[0]
    b = expand(train={"lr": 2e-4}).cells[0]
    assert a.id == b.id == "tiny__fpb__4bit-r4__1gpu__eval8bit"
    assert a.key != b.key


def test_cell_round_trips_through_its_dict():
    from bench.core.cell import Cell

    for cell in load(REPO / "matrices" / "paper.yaml").cells:
        again = Cell.from_dict(cell.to_dict())
        assert again == cell and again.key == cell.key


def test_paper_matrix_encodes_the_papers_batches():
    cells = load(REPO / "matrices" / "paper.yaml").cells
    eight = next(c for c in cells if c.model.name == "llama-3.1-8b" and c.task == "ner" and c.bits == 4)
    seventy = next(c for c in cells if c.model.name == "llama-3.1-70b" and c.task == "ner" and c.bits == 8)
    xbrl = next(c for c in cells if c.task == "xbrl" and c.bits == 8)
    assert (eight.rank, eight.gpus, eight.eval_bits, eight.train.batch_per_gpu, eight.train.grad_accum) == (
        4, 4, 8, 16, 1,
    )  # fmt: skip
    assert (seventy.rank, seventy.train.batch_per_gpu, seventy.train.grad_accum) == (8, 4, 4)
    assert (xbrl.train.batch_per_gpu, xbrl.train.grad_accum, xbrl.train.epochs) == (2, 2, 1.0)
    assert eight.train.optimizer == "zero_one_adam" and eight.train.zero_stage == 0
    assert eight.train.target_modules == ("q_proj", "k_proj", "v_proj") and eight.train.lora_alpha == 32
    assert {c.task for c in cells} == {"sentiment_fingpt", "headline", "ner", "xbrl"}
    assert any(c.is_base and c.model.name == "llama-3.1-70b" for c in cells)
    # the recipe of the paper's code (script_train.sh, optim.py, the 0/1 Adam config), deviations stated
    assert (xbrl.train.lr, eight.train.lr) == (5e-5, 1e-4)
    assert (eight.train.weight_decay, eight.train.var_freeze_step, eight.train.warmup_steps) == (
        0.005,
        1000,
        0,
    )
    assert {c.eval.protocol for c in cells} == {"finlora-2024"}
    assert (eight.eval.batch_size, seventy.eval.batch_size, xbrl.eval.batch_size) == (128, 8, 2)
    deviations = load(REPO / "matrices" / "paper.yaml").deviations
    assert any(d.startswith("Precision: bf16") and "fp16" in d for d in deviations)


def test_paper_2025_matrix_evaluates_each_adapter_at_its_training_bits():
    m = load(REPO / "matrices" / "paper-2025.yaml")
    adapters = [c for c in m.cells if not c.is_base]
    assert {(c.bits, c.rank, c.eval_bits) for c in adapters} == {(4, 4, 4), (8, 8, 8)}
    assert {(c.eval.protocol, c.eval.scorer, c.eval.batch_size) for c in m.cells} == {
        ("finlora-2025", "finlora2025", 1)
    }
    assert m.deviations


def test_paper_2025_rows_get_the_recipe_their_adapters_came_from():
    """train_lora.py (alpha 32, dropout 0.1, 0/1 Adam, weight decay 0.005, 3% warmup, global batch 64,
    the repeated sentiment mix) for LoRA/QLoRA sentiment, headline, NER; axolotl for XBRL, DoRA, rsLoRA."""
    m = load(REPO / "matrices" / "paper-2025.yaml")
    adapters = [c for c in m.cells if not c.is_base]
    train_lora = [c for c in adapters if c.task != "xbrl" and c.train.method == "lora"]
    axolotl = [c for c in adapters if c not in train_lora]
    assert {c.task for c in train_lora} == {"sentiment_2025_mix", "headline", "ner"}
    assert {(c.train.lora_alpha, c.train.lora_dropout, c.train.optimizer, c.train.weight_decay,
             c.train.warmup_ratio, c.train.batch_per_gpu * c.train.grad_accum * c.gpus)
            for c in train_lora} == {(32, 0.1, "zero_one_adam", 0.005, 0.03, 64)}  # fmt: skip
    assert {(c.train.lora_alpha, c.train.lora_dropout, c.train.optimizer, c.train.warmup_steps)
            for c in axolotl} == {(16, 0.05, "adamw", 10)}  # fmt: skip
    xbrl = {c.train.batch_per_gpu * c.train.grad_accum * c.gpus for c in axolotl if c.task == "xbrl"}
    assert xbrl == {32}
    paper = load(REPO / "matrices" / "paper.yaml")
    assert {c.train.warmup_ratio for c in paper.cells if c.train} == {0.03}


def test_deviations_must_be_sentences():
    with pytest.raises(MatrixError, match="key 'deviations': must be a list of sentences"):
        expand(deviations=[{"lr": 1}])
    assert expand(deviations=["lr: 2e-4 where the paper used 1e-4, because the CPU run is short"]).deviations


def test_error_names_file_key_and_suggests_the_fix():
    with pytest.raises(MatrixError) as err:
        expand(axes={**BASE["axes"], "rnak": [4]})
    assert str(err.value) == "m.yaml: key 'axes.rnak': unknown key; did you mean 'rank'?"


def test_batch_axis_sets_the_batch_names_the_cells_and_keeps_old_keys():
    plain = expand(train={"batch_per_gpu": 4}).cells
    m = expand(
        axes={**BASE["axes"], "batch": [4, 8]},
        base=True,
        train={"batch_per_gpu": 2},
        overrides=[{"when": {"batch": 8}, "train": {"grad_accum": 2}}],
    )
    trained = [c for c in m.cells if not c.is_base]
    assert sorted((c.bits, c.train.batch_per_gpu, c.train.grad_accum) for c in trained) == [
        (4, 4, 1), (4, 8, 2), (8, 4, 1), (8, 8, 2),
    ]  # fmt: skip
    assert {c.id.rsplit("__", 1)[1] for c in trained} == {"b4", "b8"}
    assert len({c.id for c in m.cells}) == len(m.cells)
    # One base row, whatever the batch.
    assert [c.id for c in m.cells if c.is_base] == ["tiny__fpb__base__1gpu__eval8bit"]
    # A matrix without the axis makes the cells (ids and keys) it made before the axis existed.
    assert "variant" not in plain[0].to_dict()
    b4 = next(c for c in trained if c.bits == 4 and c.train.batch_per_gpu == 4)
    assert b4.variant == "b4" and b4.key != plain[0].key
    assert type(b4).from_dict(b4.to_dict()) == b4


@pytest.mark.parametrize("value", [0, -4, "8", 2.5, True])
def test_batch_axis_refuses_values_that_are_not_positive_whole_numbers(value):
    with pytest.raises(MatrixError, match=r"m.yaml: key 'axes.batch': .* must be a positive whole number"):
        expand(axes={**BASE["axes"], "batch": [value]})


def test_table1_matrix_has_both_batches_and_the_70b_row():
    cells = load(REPO / "matrices" / "table1.yaml").cells
    small = [c for c in cells if c.model.source == "llama-3.1-8b-instruct"]
    assert sorted({(c.bits, c.rank, c.train.batch_per_gpu) for c in small}) == sorted(
        (b, r, n) for b in (4, 8, 16) for r in (4, 8) for n in (4, 8)
    )
    (big,) = [c for c in cells if c.model.source == "llama-3.1-70b-instruct"]
    assert (big.bits, big.rank, big.train.batch_per_gpu, big.gpus, big.eval_bits) == (4, 4, 4, 1, 4)
    assert all(c.model.weights == "random" for c in cells)
