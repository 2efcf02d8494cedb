"""Tracking and the model card on the committed smoke store (tests/fixtures/store_71db6b0): real MLflow
(embedded SQLite) and real W&B offline run files, read back with their own packages."""

from __future__ import annotations

import json
import shutil
import socket
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.core.matrix import MatrixError, load, parse
from bench.core.records import RunRecord

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests" / "fixtures" / "store_71db6b0"
SMOKE = REPO / "matrices" / "smoke.yaml"


def bench(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=600
    )


@pytest.fixture
def store(tmp_path) -> Path:
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(FIXTURE / "records.jsonl", results / "records.jsonl")
    return results


def fixture_records() -> list[RunRecord]:
    return [
        RunRecord.from_dict(json.loads(line)) for line in (FIXTURE / "records.jsonl").read_text().splitlines()
    ]


def test_the_matrix_tracking_key_is_parsed_and_stays_out_of_cell_keys():
    raw = yaml.safe_load(SMOKE.read_text())
    plain = parse(raw, SMOKE)
    tracked = parse({**raw, "tracking": {"backend": "mlflow", "uri": "http://127.0.0.1:5000"}}, SMOKE)
    assert tracked.tracking.backend == "mlflow" and tracked.tracking.uri == "http://127.0.0.1:5000"
    assert [c.key for c in tracked.cells] == [c.key for c in plain.cells] and plain.tracking is None
    with pytest.raises(MatrixError, match="key 'tracking'.*unknown tracking backend 'neptune'"):
        parse({**raw, "tracking": {"backend": "neptune"}}, SMOKE)
    with pytest.raises(MatrixError, match="wandb takes no URI"):
        parse({**raw, "tracking": {"backend": "wandb", "uri": "http://127.0.0.1:1"}}, SMOKE)
    with pytest.raises(MatrixError, match="key 'tracking'.*mapping"):
        parse({**raw, "tracking": "mlflow"}, SMOKE)


def test_a_bad_track_option_exits_2_before_anything_runs(tmp_path, data_dir):
    done = bench(
        "run",
        str(SMOKE),
        "--track",
        "tensorboard",
        "--results-dir",
        str(tmp_path),
        "--data-dir",
        str(data_dir),
    )
    assert done.returncode == 2 and "--track 'tensorboard'" in done.stderr and "Traceback" not in done.stderr


def test_mapping_holds_the_cells_settings_registry_metrics_intervals_and_loss_curve():
    from bench.tracking import mapping

    train, _, _, evaluation, _ = fixture_records()
    params = mapping.params(train.cell)
    assert params["train.lr"] == "0.001" and params["model.source"] == "tiny" and params["bits"] == "4"
    assert params["train.target_modules"] == "q_proj,k_proj,v_proj"
    metrics = mapping.metrics(train)
    assert metrics["train/tokens_per_s"] == 664.27 and metrics["train/trainable_params"] == 2560
    assert "train/gpu_mem_sum_gb" not in metrics  # null on a CPU: not a zero
    assert mapping.loss_curve(train)[0] == (1, 7.80865) and len(mapping.loss_curve(train)) == 20
    scores = mapping.metrics(evaluation)
    assert scores["finlora/fpb/accuracy"] == 0.5625 and scores["finlora/fpb/accuracy_ci_low"] == 0.41667
    assert scores["strict/fpb/weighted_f1_ci_high"] == 0.0 and scores["eval/s_per_example"] == 0.0906


def test_bench_track_logs_each_cell_once_into_embedded_mlflow(store):
    mlflow = pytest.importorskip("mlflow")
    first = bench(
        "track", str(SMOKE), "--to", "mlflow", "--results-dir", str(store), "--reports-dir", str(FIXTURE)
    )
    assert first.returncode == 0, first.stderr[-3000:]
    assert "5 records logged" in first.stdout
    again = bench("track", str(SMOKE), "--to", "mlflow", "--results-dir", str(store))
    assert (
        again.returncode == 0
        and "0 records logged" in again.stdout
        and "5 were there already" in again.stdout
    )
    mlflow.set_tracking_uri(f"sqlite:///{store / 'mlflow' / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["smoke"], filter_string="tags.`bench.role` = 'cell'")
    assert sorted(runs["tags.mlflow.runName"]) == sorted(c.id for c in load(SMOKE).cells)
    four = runs[runs["tags.bench.cell_key"] == "1a4ad01e3ad50145"].iloc[0]
    assert four["status"] == "FINISHED" and four["tags.bench.status"] == "done"
    assert four["params.train.max_steps"] == "20" and four["metrics.finlora/fpb/accuracy"] == 0.5625
    client = mlflow.tracking.MlflowClient()
    history = client.get_metric_history(four["run_id"], "train/loss")
    assert [(m.step, m.value) for m in history] == [
        tuple(p) for p in fixture_records()[0].metrics["loss_curve"]
    ]
    report = mlflow.search_runs(experiment_names=["smoke"], filter_string="tags.`bench.role` = 'report'")
    assert {a.path for a in client.list_artifacts(report["run_id"][0], "report")} == {
        "report/smoke.md",
        "report/smoke.csv",
    }
    mlflow.set_tracking_uri(None)


def test_an_unreachable_server_fails_tracking_says_how_to_catch_up_and_leaves_the_store(store):
    pytest.importorskip("mlflow")
    with socket.socket() as s:  # a port with nothing listening on it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    before = (store / "records.jsonl").read_bytes()
    done = bench("track", str(SMOKE), "--to", f"mlflow=http://127.0.0.1:{port}", "--results-dir", str(store))
    assert done.returncode == 1 and "tracking (mlflow) failed" in done.stdout + done.stderr
    assert f"bench track {SMOKE} --to mlflow=http://127.0.0.1:{port}" in done.stdout
    assert (store / "records.jsonl").read_bytes() == before and "Traceback" not in done.stderr


def wandb_records(path: Path) -> list:
    """The run file's records, as wandb's own protobuf Record. The file is a LevelDB-format log
    (wandb's `:W&B` header, 32 KiB blocks of chunks); wandb ships no Python reader for it any more."""
    from wandb.proto import wandb_internal_pb2

    data, pos, partial, chunks = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the block's zero padding
            pos += left
            continue
        chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        partial = chunk if kind in (1, 2) else partial + chunk
        if kind in (1, 4):
            chunks.append(partial)
    return [wandb_internal_pb2.Record.FromString(c) for c in chunks]


def test_wandb_offline_run_files_hold_the_same_metrics_and_loss_curve(store, monkeypatch):
    pytest.importorskip("wandb")
    env = {**__import__("os").environ, "WANDB_SILENT": "true"}
    env.pop("WANDB_MODE", None)  # offline is the default
    done = bench("track", str(SMOKE), "--to", "wandb", "--results-dir", str(store), env=env)
    assert done.returncode == 0 and "5 records logged" in done.stdout, done.stdout + done.stderr[-3000:]
    again = bench("track", str(SMOKE), "--to", "wandb", "--results-dir", str(store), env=env)
    assert "0 records logged" in again.stdout
    train = fixture_records()[0]
    files = sorted((store / "wandb" / "wandb").glob(f"offline-run-*-cell-{train.cell_key}/*.wandb"))
    assert len(files) == 2  # the train and the eval record, one resumed piece each of run cell-<key>
    records = [r for f in files for r in wandb_records(f)]
    assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {
        f"cell-{train.cell_key}"
    }
    curve = [
        {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
        for r in records
        if r.WhichOneof("record_type") == "history"
    ]
    curve = [h for h in curve if "train/loss" in h]
    assert [(h["train/step"], h["train/loss"]) for h in curve] == [
        tuple(p) for p in train.metrics["loss_curve"]
    ]
    summary = {
        i.key or "/".join(i.nested_key): json.loads(i.value_json)
        for r in records
        if r.WhichOneof("record_type") == "summary"
        for i in r.summary.update
    }
    assert summary["train/tokens_per_s"] == 664.27 and summary["finlora/fpb/accuracy"] == 0.5625
    assert summary["bench.cell_key"] == train.cell_key and summary["bench.status"] == "done"


def test_the_model_card_renders_and_names_the_scores_with_intervals_scorer_and_protocol():
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    from bench.core.cell import Cell
    from bench.export.card import Export, model_card

    train, _, _, evaluation, _ = fixture_records()
    card = model_card(Export(Cell.from_dict(train.cell), train, evaluation, False, False, "0.1.0"))
    parsed = ModelCard(card)
    assert parsed.data.base_model == "tiny" and parsed.data.library_name == "peft"
    name, results = model_index_to_eval_results(parsed.data.to_dict()["model-index"])
    assert name == train.cell_id
    assert {(r.dataset_type, r.metric_type, r.metric_value) for r in results} >= {("fpb", "accuracy", 0.5625)}
    assert "| fpb | finlora | 0.5625 [0.4167, 0.6875] |" in card and "Protocol `bench`" in card
    assert "git 71db6b0f63eb" in card and "4-bit" in card and "lr 0.001, 20 steps" in card
    assert "optimizer adamw (asked for zero_one_adam)" in card  # what ran, from the record


def test_export_of_an_adapter_without_a_training_record_says_so(tmp_path):
    done = bench("export", str(SMOKE), "tiny__fpb__4bit-r4__1gpu__eval8bit", "--to", str(tmp_path / "out"),
                 "--results-dir", str(tmp_path))  # fmt: skip
    assert done.returncode == 2 and "no successful training record" in done.stderr
    done = bench("export", str(SMOKE), "tiny__fpb__base__1gpu__eval8bit", "--to", str(tmp_path / "out"))
    assert done.returncode == 2 and "base row" in done.stderr
