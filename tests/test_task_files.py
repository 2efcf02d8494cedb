"""A task is one file: a user's own task from a CSV with its own column names and labels, outside the
repository; its errors before anything loads; its content in the cell key; its lm-eval YAMLs."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from bench.__main__ import main
from bench.core import tasks as task_registry
from bench.core.data import DataError, load_splits
from bench.core.matrix import MatrixError, load
from bench.core.scoring import score
from bench.core.tasks import TaskError, load_file

STANCES = ("hawkish", "dovish", "neutral")
TASK = """\
bench_task: 1
name: {name}
description: Stance of a central-bank sentence
data:
  train: data/train.csv
  test: data/test.csv
prompt: "Instruction: What is the monetary policy stance of this sentence? Please choose an answer from \\
  {{hawkish/dovish/neutral}}.\\nInput: {{{{ sentence }}}}\\nAnswer: "
target: stance_code
label_map: {{0: dovish, 1: hawkish, 2: neutral}}
answer:
  type: label
  labels: [hawkish, dovish, neutral]
"""


def write_csv(path: Path, rows: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "sentence", "stance_code"])
        writer.writerows((i, s, c) for i, (s, c) in enumerate(rows))


def sentences(n: int, offset: int = 0) -> list[tuple[str, int]]:
    words = ("raise rates to fight inflation", "cut rates to support jobs", "keep rates where they are")
    return [(f"The committee will {words[(i + offset) % 3]} (meeting {i + offset}).", (i + offset) % 3)
            for i in range(n)]  # fmt: skip


@pytest.fixture
def user_tasks(tmp_path) -> Path:
    folder = tmp_path / "my_tasks"
    folder.mkdir()
    (folder / "fomc_stance.yaml").write_text(TASK.format(name="fomc_stance"))
    write_csv(folder / "data" / "train.csv", sentences(30))
    write_csv(folder / "data" / "test.csv", sentences(12, offset=100))
    yield folder
    task_registry.REGISTRY._user.clear()


def register(folder: Path):
    from bench.core.task_content import register_folders

    return register_folders([folder])


def test_a_csv_task_with_its_own_columns_and_labels(user_tasks):
    register(user_tasks)
    splits = load_splits("fomc_stance", None)
    assert (splits.info.train_rows, splits.info.test_rows, splits.info.local_split) == (30, 12, False)
    first = splits.train[0]
    assert first["context"].startswith("Instruction: What is the monetary policy stance")
    sentence = "The committee will raise rates to fight inflation (meeting 0)."
    assert first["context"].endswith("{hawkish/dovish/neutral}.\nInput: " + sentence + "\nAnswer: ")
    assert {r["target"] for r in splits.test} == set(STANCES)
    assert set(splits.info.sha256) == {"train.csv", "test.csv"}
    assert splits.info.task_file == str((user_tasks / "fomc_stance.yaml").resolve())  # records name it
    assert splits.info.task_sha256 == task_registry.get("fomc_stance").sha256


def test_one_file_splits_by_a_stated_seeded_hash(user_tasks):
    (user_tasks / "data" / "test.csv").unlink()
    text = TASK.format(name="fomc_stance").replace("  test: data/test.csv\n", "")
    text += "split: {test_fraction: 0.25, seed: fomc-1, group_by: sentence}\n"
    (user_tasks / "fomc_stance.yaml").write_text(text)
    register(user_tasks)
    splits = load_splits("fomc_stance", None)
    assert splits.info.local_split and "75% train / 25% test" in splits.info.note
    assert splits.info.train_rows + splits.info.test_rows == 30
    again = [r["context"] for r in load_splits("fomc_stance", None).test]
    assert again == [r["context"] for r in splits.test]


def test_parquet_and_jsonl_read_through_the_same_task_file(user_tasks):
    import pandas as pd

    for side in ("train", "test"):
        frame = pd.read_csv(user_tasks / "data" / f"{side}.csv")
        frame.to_parquet(user_tasks / "data" / f"{side}.parquet")
        with open(user_tasks / "data" / f"{side}.jsonl", "w") as fh:
            for row in frame.to_dict("records"):
                fh.write(json.dumps(row) + "\n")
    text = TASK.format(name="fomc_stance")
    contexts = {}
    for suffix in ("parquet", "jsonl"):
        (user_tasks / "fomc_stance.yaml").write_text(text.replace(".csv", f".{suffix}"))
        task_registry.REGISTRY._user.clear()
        register(user_tasks)
        contexts[suffix] = [r["context"] for r in load_splits("fomc_stance", None).test]
    assert contexts["parquet"] == contexts["jsonl"] and len(contexts["jsonl"]) == 12


@pytest.mark.parametrize(
    ("edit", "words"),
    [
        (lambda t: t.replace("{{ sentence }}", "{{ text }}"), "no column 'text'"),
        (lambda t: t.replace("{{ sentence }}", "{{ sentence"), "key 'prompt': not a valid template"),
        (lambda t: t.replace("2: neutral", "2: unsure"), "'label_map.2': 'unsure' is not in answer.labels"),
        (lambda t: t.replace("[hawkish, dovish, neutral]", "[hawkish, dovish]").replace(", 2: neutral", ""),
         "target '2' is not a label of task 'fomc_stance'"),
        (lambda t: t.replace("type: label", "type: labels"), "key 'answer.type': 'labels' is not one of"),
        (lambda t: t.replace("prompt:", "promt:"), "key 'promt': unknown key; did you mean 'prompt'?"),
        (lambda t: t.replace("bench_task: 1", "bench_task: 2"), "key 'bench_task': must be 1"),
        (lambda t: t.replace("data/test.csv", "data/empty.csv"), "the test split is empty"),
    ],
)  # fmt: skip
def test_task_file_mistakes_name_the_file_the_key_or_row_and_the_fix(user_tasks, edit, words):
    write_csv(user_tasks / "data" / "empty.csv", [])
    (user_tasks / "fomc_stance.yaml").write_text(edit(TASK.format(name="fomc_stance")))
    with pytest.raises((TaskError, DataError)) as err:
        register(user_tasks)
    assert words in str(err.value) and "fomc_stance" in str(err.value)


def test_a_hub_dataset_that_cannot_be_reached_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    (tmp_path / "hub_task.yaml").write_text(
        "bench_task: 1\ndata: {hub: {path: someorg/fomc-stance, revision: 0123abc, test: test}}\n"
        'prompt: "{{ text }}"\ntarget: label\nanswer: {type: label, labels: [a, b]}\n'
    )
    spec = load_file(tmp_path / "hub_task.yaml")
    task_registry.REGISTRY.add(spec)
    try:
        with pytest.raises(DataError) as err:
            load_splits("hub_task", None)
    finally:
        task_registry.REGISTRY._user.clear()
    text = str(err.value)
    assert "hub_task.yaml: key 'data.hub': cannot load 'someorg/fomc-stance'" in text
    assert "network access" in text


def matrix_file(folder: Path, tasks_dir: str) -> Path:
    path = folder / "m.yaml"
    path.write_text(json.dumps({
        "name": "stance", "tasks_dir": tasks_dir, "models": {"tiny": {"source": "tiny"}},
        "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fomc_stance"]},
    }))  # fmt: skip
    return path


def test_a_task_s_content_is_in_the_cell_key_and_its_place_is_not(user_tasks, tmp_path):
    cell = load(matrix_file(tmp_path, "my_tasks")).cells[0]
    (task_file,) = cell.task_files
    assert task_file.file == str((user_tasks / "fomc_stance.yaml").resolve())
    moved = tmp_path / "elsewhere"
    shutil.copytree(user_tasks, moved / "my_tasks")
    task_registry.REGISTRY._user.clear()
    assert load(matrix_file(moved, "my_tasks")).cells[0].key == cell.key  # same content, other folder
    write_csv(moved / "my_tasks" / "data" / "test.csv", sentences(12, offset=200))
    task_registry.REGISTRY._user.clear()
    assert load(matrix_file(moved, "my_tasks")).cells[0].key != cell.key  # the data changed
    text = (user_tasks / "fomc_stance.yaml").read_text().replace("Please choose", "Choose")
    (user_tasks / "fomc_stance.yaml").write_text(text)
    task_registry.REGISTRY._user.clear()
    assert load(matrix_file(tmp_path, "my_tasks")).cells[0].key != cell.key  # the prompt changed
    assert cell.to_dict()["task_files"][0]["file"] == task_file.file  # records name where it was


def test_matrix_mistakes_in_a_user_task_exit_2_before_anything_loads(user_tasks, tmp_path, capsys):
    text = TASK.format(name="fomc_stance").replace("sentence }}", "txt }}")
    (user_tasks / "fomc_stance.yaml").write_text(text)
    matrix = matrix_file(tmp_path, "my_tasks")
    assert main(["plan", str(matrix), "--results-dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "key 'tasks_dir'" in err and "no column 'txt'" in err and "Traceback" not in err
    with pytest.raises(MatrixError, match="no such tasks folder"):
        load(matrix_file(tmp_path, "nowhere"))


def test_the_generic_rule_scores_any_label_set(user_tasks):
    register(user_tasks)
    targets = ["hawkish", "dovish", "neutral", "hawkish"]
    outputs = ["Hawkish.", "rather dovish", "I cannot tell", "dovish, not hawkish"]
    finlora = score("fomc_stance", outputs, targets, "finlora")
    strict = score("fomc_stance", outputs, targets, "strict")
    # finlora's rule: the first label of the file's order found anywhere -> "hawkish" for the last row
    assert finlora["accuracy"] == 0.75
    # strict: the earliest whole-word label -> "dovish" for the last row; "I cannot tell" is missing
    assert strict["accuracy"] == 0.5 and strict["missing"] == 0.25


def test_stock_lm_eval_reads_a_user_task_from_bench_tasks_path(user_tasks, capsys):
    from lm_eval.tasks import TaskManager

    assert main(["tasks", "--path", "--tasks-dir", str(user_tasks)]) == 0
    include = Path(capsys.readouterr().out.strip())
    assert {p.name for p in include.glob("*.yaml")} == {
        "fomc_stance.yaml", "fomc_stance_finlora2024.yaml", "fomc_stance_finlora2025.yaml"}  # fmt: skip
    task_registry.REGISTRY._user.clear()  # lm-eval's loader registers it again from the YAML
    task = TaskManager(include_path=str(include), include_defaults=False).load(["fomc_stance"])["tasks"]
    built = task["fomc_stance"]
    built.build_all_requests(limit=3, rank=0, world_size=1)
    rows = load_splits("fomc_stance", None).test[:3]
    assert [inst.args[0] for inst in built.instances] == [r["context"] for r in rows]
    assert main(["tasks", "--check", "--tasks-dir", str(user_tasks)]) == 0


def test_a_task_file_that_is_not_utf8_names_its_line(tmp_path):
    path = tmp_path / "latin.yaml"
    path.write_bytes("bench_task: 1\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(TaskError, match=r"latin.yaml:2: not UTF-8 text \(byte 0xe9\)"):
        load_file(path)
