from pathlib import Path

from bench.__main__ import main
from bench.core.matrix import load, parse
from bench.planning.planner import architecture, does_not_fit, predict

REPO = Path(__file__).resolve().parents[1]


def paper_cell(model: str, task: str, bits):
    cells = load(REPO / "matrices" / "paper.yaml").cells
    return next(c for c in cells if c.model.name == model and c.task == task and c.bits == bits)


def test_hub_ids_of_the_paper_use_the_shipped_configs():
    config = architecture(paper_cell("llama-3.1-70b", "ner", 4).model)
    assert config["hidden_size"] == 8192 and config["num_hidden_layers"] == 80


def test_8b_cells_fit_the_papers_48_gb_gpus_and_70b_int8_training_does_not(data_dir):
    for bits in (4, 8):
        trained = predict(paper_cell("llama-3.1-8b", "ner", bits), data_dir)
        assert trained.train_gb < 45 and trained.eval_gb < 45
    for model in ("llama-3.1-8b", "llama-3.1-70b"):
        base = predict(paper_cell(model, "ner", None), data_dir)
        assert base.train_gb is None and 0 < base.eval_gb < 45  # 8-bit inference split over 4 GPUs
    # DDP keeps a whole 8-bit 70B (~70 GB of weights) on every GPU: it needs 80 GB cards.
    assert predict(paper_cell("llama-3.1-70b", "ner", 8), data_dir).train_gb > 48


def test_sequence_length_comes_from_the_longest_training_rows(data_dir):
    fpb = predict(paper_cell("llama-3.1-8b", "headline", 4), data_dir)
    ner = predict(paper_cell("llama-3.1-8b", "ner", 4), data_dir)
    assert fpb.seq_len < ner.seq_len <= 512
    assert predict(paper_cell("llama-3.1-8b", "ner", 4), None).seq_len == 512  # no data: the cap
    assert "seq_len~" in ner.basis


def test_unknown_architecture_has_no_prediction(tmp_path):
    m = parse(
        {"models": {"x": {"source": "someorg/some-model"}},
         "axes": {"model": ["x"], "bits": [4], "rank": [4], "task": ["fpb"]}},
        tmp_path / "m.yaml",
    )  # fmt: skip
    assert predict(m.cells[0]) is None


FIT_MATRIX = {
    "name": "fit",
    "models": {"big": {"source": "llama-3.1-70b-instruct", "weights": "random"}, "tiny": {"source": "tiny"}},
    "axes": {"model": ["big", "tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "train": {"max_steps": 2},
    "eval": {"limit": 4},
}


def test_cells_that_cannot_fit_the_visible_gpus_are_skipped_unless_forced(
    monkeypatch, tmp_path, data_dir, capsys
):
    """`bench run` end to end through main(), with the visible GPUs' memory faked where it is read."""
    import yaml

    import bench.planning.fit
    from bench.core.records import RunRecord, Status
    from bench.core.store import Store
    from bench.orchestration.launch import Launcher

    matrix = tmp_path / "fit.yaml"
    matrix.write_text(yaml.safe_dump(FIT_MATRIX))
    big, tiny = load(matrix).cells
    need = predict(big, data_dir).train_gb
    assert does_not_fit(predict(big, data_dir), "train", []) is None  # no GPU: nothing to check
    monkeypatch.setattr(bench.planning.fit, "visible_gpu_gb", lambda: [need - 1] * 4)
    ran = []

    def launch(self, step):  # the workers are not what is tested here: which steps reach them is
        ran.append((step.cell.id, step.phase))
        return RunRecord(step.cell.key, step.cell.id, step.cell.to_dict(), step.phase, Status.OK, "t0", "t1",
                         1.0, matrix="fit", metrics={"tokens_per_s": 1.0, "train_loss_first": 1.0,
                         "train_loss_last": 1.0}, scores=[{"task": "fpb", "scorer": "finlora", "n": 4,
                         "accuracy": 0.5, "weighted_f1": 0.5}])  # fmt: skip

    monkeypatch.setattr(Launcher, "__call__", launch)
    results, reports = tmp_path / "results", tmp_path / "reports"
    common = ["--results-dir", str(results), "--data-dir", str(data_dir)]
    assert main(["run", str(matrix), *common, "--reports-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert f"{big.id}: train: predicted {need:.1f} GiB per GPU" in out and "skipped: would not fit" in out
    assert ran == [(tiny.id, "train"), (tiny.id, "eval")]  # the big cell never reached a worker
    assert {r.cell_key for r in Store(results).records()} == {tiny.key}  # and left no record
    assert "skipped: would not fit" in (reports / "fit.md").read_text()

    assert main(["plan", str(matrix), *common]) == 0
    plan_out = capsys.readouterr().out
    assert next(line for line in plan_out.splitlines() if big.id in line).count("skipped: would not fit") == 1
    assert "2 steps to run" not in plan_out and "0 steps to run" in plan_out

    assert main(["run", str(matrix), *common, "--reports-dir", str(reports), "--force"]) == 0
    assert "runs anyway (--force)" in capsys.readouterr().out
    assert ran[2:] == [(big.id, "train"), (big.id, "eval")]


def test_report_shows_the_planners_error_against_the_measurement():
    from bench.core.records import RunRecord, Status
    from bench.report.build import build_report

    cells = load(REPO / "matrices" / "table1.yaml").cells
    cell = cells[0]
    metrics = {"predicted_gpu_gb": 18.0, "predicted_basis": "bench.planning.memory, seq_len~300",
               "gpu_mem_allocated_gb": [15.0], "gpu_mem_sum_gb": 15.0, "device": "H100"}  # fmt: skip
    record = RunRecord(
        cell.key, cell.id, cell.to_dict(), "train", Status.OK, "t0", "t1", 9.0, metrics=metrics
    )
    report = build_report("table1", "", list(cells), [record], {})
    table = next(t for t in report.tables if t.key == "planner")
    (row,) = table.rows
    assert [e.text for e in row[2:6]] == ["train", "18.00", "15.00", "+20"]


def test_table1s_70b_4bit_row_fits_one_80_gb_gpu_for_training_and_evaluation(data_dir):
    (big,) = [c for c in load(REPO / "matrices" / "table1.yaml").cells if "70b" in c.model.name]
    predicted = predict(big, data_dir)
    assert 35 < predicted.train_gb < 75 and 35 < predicted.eval_gb < 75  # 4-bit 70B: ~37 GB of weights


def test_the_packaged_pretrained_model_has_a_prediction_from_its_shipped_config(data_dir):
    cells = load(REPO / "matrices" / "ci.yaml").cells
    config = architecture(cells[0].model)
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (576, 30, 49152)
    trained = predict(next(c for c in cells if not c.is_base), data_dir)
    assert 0.1 < trained.eval_gb < trained.train_gb < 4  # a 135M model
