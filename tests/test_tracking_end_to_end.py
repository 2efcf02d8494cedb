"""Tracking and export through the real stack: the smoke matrix (fewer steps and rows) with --track mlflow
into the embedded SQLite store and into a real `mlflow server` on 127.0.0.1 that the test kills mid-run,
then `bench track` completing the runs; a merged export scored by stock lm_eval."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
mlflow = pytest.importorskip("mlflow")


def bench(*args, env, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, **kw)  # fmt: skip


def small_smoke(path: Path, **changes) -> Path:
    raw = yaml.safe_load((REPO / "matrices" / "smoke.yaml").read_text())
    # fp32 pinned: the export test scores the merged model under stock lm_eval in float32, as recorded
    raw["train"].update(max_steps=8, train_limit=64, precision="fp32")
    raw["eval"].update(limit=16, precision="fp32")
    raw.update(changes)
    path.write_text(yaml.safe_dump(raw))
    return path


def records_of(results: Path) -> list[dict]:
    return [json.loads(line) for line in (results / "records.jsonl").read_text().splitlines()]


def cell_runs(uri: str, experiment: str):
    client = mlflow.tracking.MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client, client.search_runs([exp.experiment_id], "tags.`bench.role` = 'cell'")


@pytest.fixture(scope="module")
def env(data_dir, bench_cache):
    return {**os.environ, "BENCH_DATA": str(data_dir), "BENCH_CACHE": str(bench_cache), "HF_HUB_OFFLINE": "1"}


def test_tracked_smoke_run_logs_one_run_per_cell_a_rerun_adds_none_a_retry_updates_its_run(tmp_path, env):
    matrix = small_smoke(tmp_path / "smoke.yaml")
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ("--results-dir", str(results), "--reports-dir", str(reports), "--track", "mlflow")
    first = bench("run", str(matrix), *args, env={**env, "BENCH_FAULT": "train:crash@8bit-r8"})
    assert first.returncode == 1, first.stdout[-3000:] + first.stderr[-3000:]  # the failed cell, as untracked
    assert "tracking (mlflow): 4 records logged" in first.stdout
    uri = f"sqlite:///{results / 'mlflow' / 'mlflow.db'}"
    _, runs = cell_runs(uri, "smoke")
    failed = next(r for r in runs if "8bit-r8" in r.info.run_name)
    assert len(runs) == 3 and failed.info.status == "FAILED" and failed.data.tags["bench.status"] == "failed"
    again = bench("run", str(matrix), *args, env=env)
    assert again.returncode == 0 and "0 steps to run" in again.stdout, again.stderr[-3000:]
    assert len(cell_runs(uri, "smoke")[1]) == 3
    retried = bench("run", str(matrix), *args, "--retry", "failed", env=env)
    assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
    client, runs = cell_runs(uri, "smoke")
    records = [r for r in records_of(results) if r["status"] == "ok"]
    assert sorted(r.info.run_name for r in runs) == sorted({r["cell_id"] for r in records})
    for run in runs:
        key = run.data.tags["bench.cell_key"]
        mine = {r["phase"]: r for r in records if r["cell_key"] == key}
        assert run.info.status == "FINISHED" and run.data.tags["bench.status"] == "done"
        assert run.data.params["eval.limit"] == "16" and run.data.params["eval_bits"] == "8"
        score = next(s for s in mine["eval"]["scores"] if s["scorer"] == "finlora")
        assert run.data.metrics["finlora/fpb/accuracy"] == pytest.approx(score["accuracy"])
        assert run.data.metrics["finlora/fpb/accuracy_ci_low"] == pytest.approx(score["accuracy_ci"][0])
        assert run.data.metrics["eval/s_per_example"] > 0
        folders = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"samples", "logs"} <= folders
        if "train" in mine:
            assert run.data.params["train.max_steps"] == "8" and "adapter" in folders
            history = client.get_metric_history(run.info.run_id, "train/loss")
            assert [(m.step, m.value) for m in history] == [
                tuple(p) for p in mine["train"]["metrics"]["loss_curve"]
            ]
            assert run.data.metrics["train/tokens_per_s"] > 0
            assert any(
                a.path.endswith("adapter_config.json")
                for a in client.list_artifacts(run.info.run_id, "adapter")
            )
    report_run = client.search_runs([runs[0].info.experiment_id], "tags.`bench.role` = 'report'")[0]
    assert {a.path for a in client.list_artifacts(report_run.info.run_id, "report")} >= {"report/smoke.md"}
    tracked = bench("track", str(matrix), "--to", "mlflow", "--results-dir", str(results),
                    "--reports-dir", str(reports), env=env)  # fmt: skip
    assert tracked.returncode == 0, tracked.stderr[-3000:]
    _, runs_after = cell_runs(uri, "smoke")
    assert len(runs_after) == len(runs)
    trained = next(r for r in runs_after if "train.max_steps" in r.data.params)
    assert len(client.get_metric_history(trained.info.run_id, "train/loss")) == 8  # nothing logged twice


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp_path: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
               "--artifacts-destination", str(tmp_path / "server-artifacts"), "--workers", "1"]  # fmt: skip
    server = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise AssertionError("mlflow server did not start")


def stop(server: subprocess.Popen) -> None:
    os.killpg(server.pid, 9)
    server.wait(timeout=30)


def test_a_server_killed_mid_run_changes_no_record_and_bench_track_completes_the_runs(tmp_path, env):
    matrix = small_smoke(tmp_path / "smoke.yaml")
    results, port = tmp_path / "results", free_port()
    server = start_server(tmp_path, port)
    uri = f"http://127.0.0.1:{port}"
    try:
        run = subprocess.Popen(
            [sys.executable, "-m", "bench", "run", str(matrix), "--results-dir", str(results),
             "--reports-dir", str(tmp_path / "reports"), "--track", f"mlflow={uri}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        store = results / "records.jsonl"
        while not (store.is_file() and store.read_text().count("\n") >= 1) and run.poll() is None:
            time.sleep(0.5)
        time.sleep(2)  # the first record's run is logged; the rest meet a dead server
    finally:
        stop(server)
    out, err = run.communicate(timeout=1800)
    assert run.returncode == 0, out[-3000:] + err[-3000:]  # as without tracking
    records = records_of(results)
    assert len(records) == 5 and {r["status"] for r in records} == {"ok"}
    assert "tracking (mlflow) failed" in out + err and "bench track" in out
    assert "tracking (mlflow) failed" in (tmp_path / "reports" / "smoke.md").read_text()
    server = start_server(tmp_path, port)
    try:
        tracked = bench("track", str(matrix), "--to", f"mlflow={uri}", "--results-dir", str(results), env=env)
        assert tracked.returncode == 0, tracked.stdout[-3000:] + tracked.stderr[-3000:]
        client, runs = cell_runs(uri, "smoke")
        assert len(runs) == 3 and {r.data.tags["bench.status"] for r in runs} == {"done"}
        assert all("finlora/fpb/accuracy" in r.data.metrics for r in runs)
        trained = [r for r in runs if "train.max_steps" in r.data.params]
        assert len(trained) == 2
        for r in trained:
            assert len(client.get_metric_history(r.info.run_id, "train/loss")) == 8
            assert "adapter" in {a.path for a in client.list_artifacts(r.info.run_id)}
    finally:
        stop(server)


def test_a_merged_16bit_export_scores_under_stock_lm_eval_as_recorded(tmp_path, env):
    matrix = small_smoke(tmp_path / "m16.yaml", name="m16", base=False)
    raw = yaml.safe_load(matrix.read_text())
    raw["axes"].update(quant=[{"bits": 16, "rank": 4}], eval_bits=[16])
    matrix.write_text(yaml.safe_dump(raw))
    results = tmp_path / "results"
    done = bench("run", str(matrix), "--results-dir", str(results), "--no-report", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    evaluation = next(r for r in records_of(results) if r["phase"] == "eval")
    out = tmp_path / "merged"
    exported = bench("export", str(matrix), evaluation["cell_id"], "--to", str(out), "--merged",
                    "--results-dir", str(results), env=env)  # fmt: skip
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert not (out / "adapter_config.json").exists() and list(out.glob("*.safetensors"))
    card = (out / "README.md").read_text()
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    parsed = ModelCard(card)
    _, results_list = model_index_to_eval_results(parsed.data.to_dict()["model-index"])
    finlora = next(s for s in evaluation["scores"] if s["scorer"] == "finlora")
    assert any(r.metric_type == "accuracy" and r.metric_value == pytest.approx(finlora["accuracy"], abs=1e-5)
               for r in results_list)  # fmt: skip
    assert "finlora" in card and f"{finlora['accuracy']:.4f}" in card
    command = [sys.executable, "-m", "lm_eval", "--include_path", "tasks", "--tasks", "fpb", "--model", "hf",
               "--model_args", f"pretrained={out},dtype=float32", "--device", "cpu", "--limit", "16",
               "--batch_size", "16", "--output_path", str(tmp_path / "lm_eval")]  # fmt: skip
    stock = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert stock.returncode == 0, stock.stderr[-3000:]
    found = json.loads(next((tmp_path / "lm_eval").rglob("results_*.json")).read_text())["results"]["fpb"]
    assert found["acc_finlora,first_line"] == pytest.approx(finlora["accuracy"])
    assert found["f1_finlora,first_line"] == pytest.approx(finlora["weighted_f1"])


def test_merging_onto_a_4bit_base_is_refused_without_dequantize(tmp_path, env):
    matrix = REPO / "matrices" / "smoke.yaml"
    done = bench("export", str(matrix), "tiny__fpb__4bit-r4__1gpu__eval8bit", "--to", str(tmp_path / "x"),
                 "--merged", "--results-dir", str(tmp_path / "empty"), env=env)  # fmt: skip
    assert done.returncode == 2 and "--dequantize" in done.stderr and "Traceback" not in done.stderr
