"""tasks/: the lm-eval YAMLs build, show the model the row's context byte for byte, and score."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.core.data import load_splits
from bench.core.protocols import PROTOCOLS
from bench.core.scoring import score
from bench.core.task_yaml import stale_builtin_yamls
from bench.core.tasks import builtin_tasks
from bench.workers.taskcheck import check_tasks, list_tasks

REPO = Path(__file__).resolve().parents[1]
TASKS_DIR = REPO / "tasks" / "lm-eval"
TASKS = builtin_tasks()
LABEL_TASKS = sorted(name for name, spec in TASKS.items() if spec.is_label)


@pytest.fixture(scope="module")
def data_dir() -> Path:
    path = Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not path.is_dir():
        pytest.skip(f"no FinLoRA data at {path}: set BENCH_DATA to the data directory")
    return path


@pytest.fixture(scope="module")
def manager(data_dir):
    from lm_eval.tasks import TaskManager

    # data_dir travels as metadata, the way `lm_eval --metadata` would pass it
    return TaskManager(
        include_path=str(TASKS_DIR), include_defaults=False, metadata={"data_dir": str(data_dir)}
    )


def build(manager, name: str):
    return manager.load([name])["tasks"][name]


def test_every_catalog_task_and_both_groups_are_listed():
    per_protocol = {t + p.task_suffix for t in TASKS for p in PROTOCOLS.values()}
    groups = {"fin_sentiment", "fin_xbrl", "fin_sentiment_finlora2024", "fin_sentiment_finlora2025"}
    assert set(list_tasks(TASKS_DIR)) == per_protocol | groups


@pytest.mark.parametrize("name", sorted(TASKS))
def test_prompt_is_the_rows_context_byte_for_byte(manager, data_dir, name):
    task = build(manager, name)
    task.build_all_requests(limit=3, rank=0, world_size=1)
    rows = load_splits(name, data_dir).test[:3]
    assert len(task.instances) == len(rows)
    for inst, row in zip(task.instances, rows, strict=True):
        context, gen_kwargs = inst.args
        assert context.encode("utf-8") == row["context"].encode("utf-8")
        assert inst.doc["target"] == row["target"]
        assert gen_kwargs["until"] == [] and gen_kwargs["do_sample"] is False
        assert gen_kwargs["max_gen_toks"] == PROTOCOLS["bench"].max_new(name)


@pytest.mark.parametrize("name", LABEL_TASKS)
def test_label_set_matches_test_targets(data_dir, name):
    targets = {r["target"] for r in load_splits(name, data_dir).test}
    assert targets == set(TASKS[name].labels)


def test_task_metrics_call_bench_scoring(manager, data_dir):
    task = build(manager, "nwgi")
    docs = list(task.test_docs())[:40]
    outputs = ["mildly positive" if i % 2 else "strong negative" for i in range(len(docs))]
    # the YAML's filter (first non-empty line), as lm-eval builds it
    ensemble = task._filters[0]
    assert ensemble.name == "first_line"
    line_filter = ensemble.filters[0]()
    filtered = [r[0] for r in line_filter.apply([["\n\n" + o + "\nmore"] for o in outputs], docs)]
    assert filtered == outputs
    per_doc = [task.process_results(doc, [out]) for doc, out in zip(docs, filtered, strict=True)]
    aggregations = task.aggregation()
    targets = [d["target"] for d in docs]
    for metric, (scorer, key) in {
        "acc_finlora": ("finlora", "accuracy"),
        "f1_finlora": ("finlora", "weighted_f1"),
        "acc_strict": ("strict", "accuracy"),
        "f1_strict": ("strict", "weighted_f1"),
    }.items():
        value = aggregations[metric]([r[metric] for r in per_doc])
        assert value == pytest.approx(score("nwgi", outputs, targets, scorer)[key])
        assert task.higher_is_better()[metric] is True


def test_committed_lm_eval_yamls_are_what_the_task_files_generate():
    assert stale_builtin_yamls(list(TASKS.values()), TASKS_DIR) == []


def test_check_tasks_passes_on_tasks_dir(data_dir):
    assert check_tasks(TASKS_DIR, metadata={"data_dir": str(data_dir)}) == []


BROKEN = {
    "bad_include.yaml": "include: _nope.yaml\ntask: bad_include\n",
    "bad_syntax.yaml": "task: [bad_syntax\n",
    "bad_function.yaml": "include: _label.yaml\ntask: bad_function\nprocess_results: !function utils.nope\n",
    "bad_task.yaml": "include: _label.yaml\ntask: bad_task\ndataset_kwargs:\n  bench_task: no_such_task\n",
    "misnamed.yaml": "include: _label.yaml\ntask: fpb_again\ndataset_kwargs:\n  bench_task: fpb\n",
    "_bad_base.yaml": "task: hidden\n",
    "no_name.yaml": "output_type: generate_until\n",
}


def test_check_tasks_reports_broken_yamls(tmp_path, data_dir):
    include = tmp_path / "tasks"
    shutil.copytree(TASKS_DIR, include, ignore=shutil.ignore_patterns("__pycache__"))
    for file_name, text in BROKEN.items():
        (include / file_name).write_text(text)
    problems = check_tasks(include, metadata={"data_dir": str(data_dir)})
    for file_name in BROKEN:
        assert any(file_name in p for p in problems), (file_name, problems)
    assert not any(f"{name}.yaml" in p for p in problems for name in TASKS), problems


def test_check_tasks_reports_a_missing_dir(tmp_path):
    assert "no such directory" in check_tasks(tmp_path / "absent")[0]


def test_stock_lm_eval_cli_runs_a_task_on_the_tiny_model(data_dir, tmp_path, monkeypatch):
    from bench.models.tiny import tiny_model_dir

    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    tiny_dir = tiny_model_dir(data_dir)
    env = {**os.environ, "BENCH_DATA": str(data_dir), "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable, "-m", "lm_eval", "--include_path", "tasks", "--tasks", "fpb",
        "--model", "hf", "--model_args", f"pretrained={tiny_dir},dtype=float32",
        "--device", "cpu", "--limit", "4", "--batch_size", "4",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    for metric in ("acc_finlora", "f1_finlora", "acc_strict", "f1_strict"):
        assert f"|{metric}" in done.stdout.replace(" ", ""), done.stdout


def test_tasks_path_is_the_folder_lm_eval_includes(capsys):
    from bench.__main__ import main

    assert main(["tasks", "--path"]) == 0
    printed = Path(capsys.readouterr().out.strip())
    assert printed == TASKS_DIR.resolve()  # an editable install maps bench.tasks to the repository's tasks/
    assert {p.name for p in printed.glob("*.yaml")} >= {"fpb.yaml", "_base.yaml", "xbrl_value.yaml"}
