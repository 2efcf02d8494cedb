"""Bad input is refused before any model loads: exit 2, one message naming file, key or line, and the fix."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml

from bench.__main__ import main

GOOD = {
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "train": {"max_steps": 2},
}


def with_(path: str, value):
    """GOOD with one key (dotted path) set to value, or removed when value is DELETE."""
    doc = json.loads(json.dumps(GOOD))
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        node.pop(last)
    else:
        node[last] = value
    return doc


DELETE = object()
MATRIX_CASES = [
    ("malformed yaml", "axes: [model: tiny\n", "not valid YAML"),
    ("not a mapping", [1, 2], "must be a mapping"),
    ("unknown top key", with_("trian", {}), "key 'trian': unknown key; did you mean 'train'?"),
    ("unknown axis", with_("axes.rnak", [4]), "key 'axes.rnak': unknown key; did you mean 'rank'?"),
    ("empty axis", with_("axes.task", []), "key 'axes.task': must be a non-empty list"),
    ("axis not a list", with_("axes.task", "fpb"), "key 'axes.task': must be a non-empty list"),
    ("missing axis", with_("axes.task", DELETE), "missing axis 'task'"),
    ("axes not a mapping", with_("axes", ["model"]), "key 'axes'"),
    ("unknown model", with_("axes.model", ["tiy"]), "unknown model 'tiy'; did you mean 'tiny'?"),
    ("unknown task", with_("axes.task", ["fbp"]), "unknown task 'fbp'; did you mean 'fpb'?"),
    ("bits 5", with_("axes.quant", [{"bits": 5, "rank": 4}]), "quant[0].bits': 5 is not one of 4, 8, 16"),
    ("eval bits 3", with_("axes.eval_bits", [3]), "key 'axes.eval_bits'"),
    ("rank 0", with_("axes.quant", [{"bits": 4, "rank": 0}]), "quant[0].rank': 0 must be a positive"),
    ("rank negative", with_("axes.quant", [{"bits": 4, "rank": -4}]), "key 'axes.quant[0].rank'"),
    ("rank a string", with_("axes.quant", [{"bits": 4, "rank": "four"}]), "key 'axes.quant[0].rank'"),
    ("gpus 0", with_("axes.gpus", [0]), "key 'axes.gpus'"),
    ("linked keys differ", with_("axes.quant", [{"bits": 4, "rank": 4}, {"bits": 8}]), "same keys"),
    ("axis twice", with_("axes.bits", [4]), "is given twice"),
    ("unknown train key", with_("train.lrr", 1), "key 'train.lrr': unknown key; did you mean 'lr'?"),
    ("lr wrong type", with_("train.lr", "fast"), "key 'train.lr': must be a number"),
    ("batch zero", with_("train.batch_per_gpu", 0), "key 'train.batch_per_gpu': must be positive"),
    ("batch a float", with_("train.batch_per_gpu", 2.5), "key 'train.batch_per_gpu': must be a whole number"),
    ("0/1 adam with zero", with_("train.zero_stage", 2), "0/1 Adam refuses ZeRO > 0"),
    ("zero stage 5", with_("train.zero_stage", 5), "key 'train.zero_stage': must be 0, 1, 2 or 3"),
    ("unknown optimizer", with_("train.optimizer", "sgd"), "key 'train.optimizer'"),
    ("unknown precision", with_("train.precision", "fp8"), "key 'train.precision'"),
    ("dropout 1.5", with_("train.lora_dropout", 1.5), "lora_dropout in [0, 1)"),
    ("no target modules", with_("train.target_modules", []), "key 'train.target_modules'"),
    ("unknown scorer", with_("eval.scorer", "lenient"), "key 'eval.scorer'"),
    ("unknown eval precision", with_("eval.precision", "fp16"), "key 'eval.precision': 'fp16' is not one of"),
    ("negative limit", with_("eval.limit", -1), "key 'eval.limit': must be positive"),
    (
        "model without source",
        with_("models.tiny", {"weights": "pretrained"}),
        "key 'models.tiny': needs 'source'",
    ),
    ("missing local model", with_("models.tiny", {"source": "./no/such/model"}), "has no config.json"),
    (
        "bad weights mode",
        with_("models.tiny", {"source": "tiny", "weights": "fake"}),
        "key 'models.tiny.weights'",
    ),
    ("bad source", with_("models.tiny", {"source": "not a hub id"}), "key 'models.tiny.source'"),
    ("path in model name", with_("models", {"../../etc": {"source": "tiny"}}), "model names use letters"),
    ("bad matrix name", with_("name", "../escape"), "key 'name'"),
    ("override without when", with_("overrides", [{"train": {"lr": 1}}]), "needs 'when'"),
    ("override unknown axis", with_("overrides", [{"when": {"modle": "tiny"}}]), "did you mean 'model'?"),
    ("exclude everything", with_("exclude", [{"model": "tiny"}]), "every cell is excluded"),
    ("base not bool", with_("base", "yes"), "key 'base': must be true or false"),
]


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("raw,expected", [c[1:] for c in MATRIX_CASES], ids=[c[0] for c in MATRIX_CASES])
def test_bad_matrix_is_refused_with_a_clear_message(tmp_path, capsys, raw, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))
    code, output = run_cli(
        capsys, "run", str(path), "--results-dir", str(tmp_path / "r"), "--data-dir", str(tmp_path)
    )
    assert code == 2
    assert str(path) in output and expected in output
    assert "Traceback" not in output
    assert not (tmp_path / "r" / "records.jsonl").exists()


def good_matrix(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    return str(path)


def test_bad_json_line_names_file_and_line(tmp_path, capsys, tiny_data):
    test_file = tiny_data / "fpb" / "test.jsonl"
    lines = test_file.read_text().splitlines(keepends=True)
    lines[6] = '{"context": "broken\n'
    test_file.write_text("".join(lines))
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tiny_data),
                           "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and f"{test_file}:7: not valid JSON" in output and "Traceback" not in output


def test_row_without_target_names_the_line(tmp_path, capsys, tiny_data):
    train_file = tiny_data / "fpb" / "train.jsonl"
    train_file.write_text(train_file.read_text() + json.dumps({"context": "x"}) + "\n")
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tiny_data),
                           "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and f"{train_file} row 21: no column 'target'" in output


def test_empty_test_split(tmp_path, capsys, tiny_data):
    (tiny_data / "fpb" / "test.jsonl").write_text("")
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tiny_data),
                           "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "the test split is empty" in output


def test_missing_task_data(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tmp_path / "empty"),
                           "--results-dir", str(tmp_path / "r"))  # fmt: skip
    assert code == 2 and "task 'fpb': no data in" in output and "--data-dir" in output


def test_missing_data_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BENCH_DATA", raising=False)
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "no data directory: pass --data-dir or set BENCH_DATA" in output


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; a read-only folder proves nothing")
def test_unwritable_results_dir(tmp_path, capsys, tiny_data):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(stat.S_IRUSR | stat.S_IXUSR)
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tiny_data),
                           "--results-dir", str(locked / "r"))  # fmt: skip
    assert code == 2 and "not writable" in output


def test_results_dir_that_is_a_file(tmp_path, capsys, tiny_data):
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, output = run_cli(capsys, "run", good_matrix(tmp_path), "--data-dir", str(tiny_data),
                           "--results-dir", str(blocker / "r"))  # fmt: skip
    assert code == 2 and "not writable" in output


def test_unknown_retry_status(tmp_path, capsys):
    code, output = run_cli(capsys, "plan", good_matrix(tmp_path), "--retry", "oom,flaky")
    assert code == 2 and "--retry" in output and "oom, failed, timeout" in output
