"""Hostile input (issue 23): bytes that are not text, nesting, duplicate keys, names too long for a file,
bad task rows, bad model configs, planner errors, output paths, NaN baselines, store lines that are not
records, a full disk, errors nobody expected and Ctrl-C. Each ends in one clear line (exit 2, or the
gate's failure), never a traceback, and leaves the store as it was."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bench.__main__ as cli
from bench.core.matrix import load
from bench.core.records import RunRecord, Status
from bench.core.store import Store, StoreError
from bench.orchestration.runner import Step, run

GOOD = {
    "name": "hostile",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
    "train": {"max_steps": 2},
}
TRAINED = "tiny__fpb__4bit-r4__1gpu__eval8bit"
BASE = "tiny__fpb__base__1gpu__eval8bit"


def bench(capsys, *argv) -> tuple[int, str]:
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def write_matrix(tmp_path: Path, doc=GOOD, name="m.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc))
    return path


def record(cell, phase, **fields) -> RunRecord:
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase, status=Status.OK,
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0,
        **fields,
    )  # fmt: skip


def scores(accuracy: float) -> list[dict]:
    return [{"task": "fpb", "scorer": "finlora", "n": 10, "accuracy": accuracy, "weighted_f1": accuracy}]


@pytest.fixture
def filled(tmp_path):
    """A matrix, a store holding every record it needs, and a baseline written by --update."""
    matrix = write_matrix(tmp_path)
    cells = {c.id: c for c in load(matrix).cells}
    store = Store(tmp_path / "results")
    store.append(record(cells[TRAINED], "train", metrics={"train_loss_last": 0.5, "steps": 2}))
    store.append(record(cells[TRAINED], "eval", scores=scores(0.8)))
    store.append(record(cells[BASE], "eval", scores=scores(0.6)))
    baseline = tmp_path / "baseline.json"
    assert cli.main(["check", str(matrix), "--baseline", str(baseline), "--update", "--no-speed",
                     "--results-dir", str(store.root)]) == 0  # fmt: skip
    return matrix, store, baseline


def assert_clear(code: int, output: str, *expected: str, status: int = 2) -> None:
    assert code == status, output
    assert "Traceback" not in output, output
    for text in expected:
        assert text in output, output


# --- matrix files -----------------------------------------------------------------------------------

MATRIX_FILES = [
    ("random bytes", bytes(range(256)) * 8, "not UTF-8 text"),
    ("one latin-1 byte", "name: caf\xe9\n".encode("latin-1"), ":1: not UTF-8 text"),
    ("20,000 nested [", b"axes: " + b"[" * 20000, "nested deeper than"),
    ("20,000 nested {", b"axes: " + b"{a: " * 20000, "nested deeper than"),
    (
        "duplicate key",
        b"models: {tiny: {source: tiny}}\naxes:\n  model: [tiny]\n  task: [fpb]\n  task: [ner]\n"
        b"  bits: [4]\n  rank: [4]\n",
        "key 'task' is given twice (lines 4 and 5)",
    ),
    (
        "duplicate top key",
        yaml.safe_dump(GOOD).encode() + b"train: {max_steps: 3}\n",
        "key 'train' is given twice",
    ),
    (
        "300-character name",
        yaml.safe_dump({**GOOD, "name": "n" * 300}).encode(),
        "key 'name': 300 characters",
    ),
    (
        "240-character model name",
        yaml.safe_dump(
            {
                **GOOD,
                "models": {"m" * 240: {"source": "tiny"}},
                "axes": {**GOOD["axes"], "model": ["m" * 240]},
            }
        ).encode(),  # fmt: skip
        "a short name of 240 characters",
    ),
]


@pytest.mark.parametrize("raw,expected", [c[1:] for c in MATRIX_FILES], ids=[c[0] for c in MATRIX_FILES])
@pytest.mark.parametrize("command", ["plan", "run", "report"])
def test_matrix_file_faults(tmp_path, capsys, raw, expected, command):
    path = tmp_path / "bad.yaml"
    path.write_bytes(raw)
    code, output = bench(capsys, command, path, "--results-dir", tmp_path / "r")
    assert_clear(code, output, str(path), expected)
    assert not (tmp_path / "r" / "records.jsonl").exists()


# --- task data --------------------------------------------------------------------------------------


def test_latin1_byte_in_data_names_file_and_line(tmp_path, capsys, tiny_data):
    train = tiny_data / "fpb" / "train.jsonl"
    lines = train.read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"the", "th\xe9".encode("latin-1"), 1)
    train.write_bytes(b"\n".join(lines))
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--data-dir", tiny_data,
                         "--results-dir", tmp_path / "r")  # fmt: skip
    assert_clear(code, output, f"{train}:5: not UTF-8 text")
    code, output = bench(capsys, "data", "--data-dir", tiny_data)
    assert_clear(code, output, f"{train}:5: not UTF-8 text", status=0)  # `bench data` lists it per task


@pytest.mark.parametrize(
    ("target", "words"),
    [(None, "column 'target' is empty"), (3, "target '3' is not a label of task 'fpb'"),
     (["positive"], "target \"['positive']\" is not a label"), ("", "the target is empty")],
)  # fmt: skip
def test_row_with_a_bad_target(tmp_path, capsys, tiny_data, target, words):
    test = tiny_data / "fpb" / "test.jsonl"
    test.write_text(test.read_text() + json.dumps({"context": "x", "target": target}) + "\n")
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--data-dir", tiny_data,
                         "--results-dir", tmp_path / "r")  # fmt: skip
    assert_clear(code, output, f"{test} row 21: {words}")


def test_test_file_that_is_a_folder_is_not_a_silent_local_split(tmp_path, capsys, tiny_data):
    test = tiny_data / "fpb" / "test.jsonl"
    test.unlink()
    test.mkdir()
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--data-dir", tiny_data,
                         "--results-dir", tmp_path / "r")  # fmt: skip
    assert_clear(code, output, f"{test} is not a file")


def test_data_dir_that_is_a_file(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "data.txt"
    blocker.write_text("")
    monkeypatch.setenv("BENCH_DATA", str(blocker))
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--results-dir", tmp_path / "r")
    assert_clear(code, output, f"data directory {blocker} is a file, not a folder")


# --- local models and the planner -------------------------------------------------------------------


@pytest.mark.parametrize(
    "config,expected",
    [
        ("{}", "has no 'hidden_size'"),
        ("[1, 2]", "holds a JSON list"),
        ("not json", "is not valid JSON"),
        ('{"hidden_size": "big"}', "'hidden_size': 'big'"),
    ],  # fmt: skip
)
@pytest.mark.parametrize("command", ["plan", "run", "report"])
def test_local_model_config_that_cannot_be_read(tmp_path, capsys, config, expected, command):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(config)
    doc = {**GOOD, "models": {"local": {"source": "./model"}}, "axes": {**GOOD["axes"], "model": ["local"]}}
    code, output = bench(capsys, command, write_matrix(tmp_path, doc), "--results-dir", tmp_path / "r")
    assert_clear(code, output, "key 'models.local.source'", expected)


@pytest.mark.parametrize("command", ["plan", "run", "report"])
def test_unknown_target_module_is_input_error(tmp_path, capsys, tiny_data, command):
    doc = {**GOOD, "train": {"target_modules": ["no_such_proj"]}}
    extra = ["--data-dir", tiny_data] if command != "report" else []
    code, output = bench(
        capsys, command, write_matrix(tmp_path, doc), "--results-dir", tmp_path / "r", *extra
    )
    assert_clear(code, output, "key 'train.target_modules'", "no_such_proj", "q_proj")
    assert not (tmp_path / "r" / "records.jsonl").exists()


# --- output directories -----------------------------------------------------------------------------


def test_reports_dir_that_is_a_file_fails_before_anything_runs(tmp_path, capsys, tiny_data):
    blocker = tmp_path / "reports"
    blocker.write_text("")
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--data-dir", tiny_data,
                         "--results-dir", tmp_path / "r", "--reports-dir", blocker)  # fmt: skip
    assert_clear(code, output, f"reports directory {blocker} is not writable")
    assert not (tmp_path / "r" / "records.jsonl").exists()


def test_report_path_that_is_a_folder(tmp_path, capsys, filled):
    matrix, store, _ = filled
    (tmp_path / "reports" / "hostile.html").mkdir(parents=True)
    code, output = bench(capsys, "report", matrix, "--results-dir", store.root, "--reports-dir",
                         tmp_path / "reports")  # fmt: skip
    assert_clear(code, output, "hostile.html is not a file")


# --- baselines --------------------------------------------------------------------------------------


def edit_baseline(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))  # json writes NaN and Infinity as Python's json reads them


def accuracy_entry(data) -> dict:
    return data["cells"][TRAINED]["metrics"]["fpb/finlora/accuracy"]


BASELINE_FAULTS = [
    ("nan tolerance", lambda d: accuracy_entry(d).update(value=0.99, tolerance=math.nan), "'tolerance'"),
    ("inf tolerance", lambda d: accuracy_entry(d).update(tolerance=math.inf), "'tolerance'"),
    ("nan value", lambda d: accuracy_entry(d).update(value=math.nan), "needs a numeric 'value'"),
    ("-inf value", lambda d: accuracy_entry(d).update(value=-math.inf), "needs a numeric 'value'"),
    ("bool value", lambda d: accuracy_entry(d).update(value=True), "needs a numeric 'value'"),
    ("cell a string", lambda d: d["cells"].update({TRAINED: "oops"}), f"cells.{TRAINED}: must be a mapping"),
    ("metrics a list", lambda d: d["cells"][TRAINED].update(metrics=[1]), "metrics: must be a mapping"),
    (
        "entry a list",
        lambda d: d["cells"][TRAINED]["metrics"].update({"fpb/finlora/accuracy": [0.9]}),
        "needs a numeric 'value'",
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    "change,expected", [c[1:] for c in BASELINE_FAULTS], ids=[c[0] for c in BASELINE_FAULTS]
)
def test_baseline_faults_never_pass(capsys, filled, change, expected):
    matrix, store, baseline = filled
    edit_baseline(baseline, change)
    before = store.path.read_bytes()
    code, output = bench(
        capsys, "check", matrix, "--baseline", baseline, "--no-speed", "--results-dir", store.root
    )
    assert_clear(code, output, str(baseline), expected)
    assert "passed" not in output
    assert store.path.read_bytes() == before


# --- stores -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["[1, 2]", '"str"', "42", "null", '{"cell_key": "k"}',
                                  "SCORES_OOPS", "METRICS_LIST"])  # fmt: skip
def test_store_line_that_is_not_a_record_is_skipped(tmp_path, capsys, filled, line):
    matrix, store, baseline = filled
    good = store.path.read_text().splitlines()
    if line == "SCORES_OOPS":
        line = json.dumps({**json.loads(good[1]), "scores": "oops"})
    if line == "METRICS_LIST":
        line = json.dumps({**json.loads(good[0]), "metrics": [1]})
    store.path.write_text("\n".join([good[0], line, *good[1:]]) + "\n")
    before = store.path.read_bytes()
    for argv, status in (
        (["plan", matrix], 0),
        (["report", matrix, "--reports-dir", tmp_path / "reports"], 0),
        # the skipped line is the training record (METRICS_LIST: line 1 stays, its copy is skipped)
        (["check", matrix, "--baseline", baseline, "--no-speed"], 0),
    ):
        code, output = bench(capsys, *argv, "--results-dir", store.root)
        assert_clear(code, output, f"warning: {store.path}:2: skipped unreadable record", status=status)
    assert store.path.read_bytes() == before


def test_records_file_that_is_a_folder(tmp_path, capsys):
    (tmp_path / "r" / "records.jsonl").mkdir(parents=True)
    for command in ("plan", "report"):
        code, output = bench(capsys, command, write_matrix(tmp_path), "--results-dir", tmp_path / "r")
        assert_clear(code, output, "records.jsonl is a directory")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs: a real filesystem that fills up (needs root, as the project's machines run)."""
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def big_record(cell, n: int) -> RunRecord:
    return record(cell, "train", metrics={"train_loss_last": 0.5}, notes=[f"{n}:" + "x" * 9000])


def test_full_disk_keeps_the_store_as_it_was_and_stops_the_matrix(tiny_fs, tmp_path):
    cell = load(write_matrix(tmp_path)).cells[0]
    store = Store(tiny_fs / "results")
    steps = [Step(cell, "train") for _ in range(20)]  # ~9 KB a record: a 64 KiB disk fills part-way
    counter = iter(range(100))
    with pytest.raises(StoreError) as err:
        run(steps, store, lambda step: big_record(step.cell, next(counter)), progress=lambda line: None)
    message = str(err.value)
    assert str(store.path) in message and "no space to append a record" in message and "bytes" in message
    kept = store.path.read_bytes()
    assert kept.endswith(b"\n")
    lines = kept.split(b"\n")[:-1]
    assert 0 < len(lines) < 20 and all(json.loads(line)["cell_key"] == cell.key for line in lines)
    assert len(store.records()) == len(lines)  # nothing torn: every line reads back


def test_failed_append_truncates_back_under_a_file_size_limit(tmp_path):
    """Without root: RLIMIT_FSIZE makes the kernel refuse the write part-way (EFBIG)."""
    cell = load(write_matrix(tmp_path)).cells[0]
    Store(tmp_path / "r").append(big_record(cell, 0))
    script = f"""
import resource, signal, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from bench.core.matrix import load
from bench.core.store import Store, StoreError
from test_hostile_input import big_record
cell = load(Path({str(tmp_path / "m.yaml")!r})).cells[0]
store = Store(Path({str(tmp_path / "r")!r}))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
size = store.path.stat().st_size
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4000, resource.RLIM_INFINITY))
try:
    store.append(big_record(cell, 1))
except StoreError as exc:
    print(exc)
"""
    before = (tmp_path / "r" / "records.jsonl").read_bytes()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "no space to append a record" in done.stdout, done.stdout + done.stderr
    assert (tmp_path / "r" / "records.jsonl").read_bytes() == before


# --- what still escapes, and Ctrl-C -----------------------------------------------------------------


def broken_plan(args):
    raise RuntimeError("something bench did not foresee")


def test_unexpected_error_is_one_line_and_a_log(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "cmd_plan", broken_plan)
    code, output = bench(capsys, "plan", write_matrix(tmp_path))
    assert_clear(code, output, "error: bench plan: RuntimeError: something bench did not foresee",
                 "full traceback in", status=1)  # fmt: skip
    assert len(output.strip().splitlines()) == 1
    log = next((tmp_path / "cache" / "errors").iterdir())
    assert "Traceback" in log.read_text() and str(log) in output
    code, output = bench(capsys, "plan", write_matrix(tmp_path), "--debug")
    assert code == 1 and "Traceback" in output and "broken_plan" in output


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_run", interrupted)
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--results-dir", tmp_path / "r")
    assert code == 130 and "Traceback" not in output
    assert f"interrupted: every record written so far is kept in {tmp_path / 'r' / 'records.jsonl'}" in output
    assert "run the same command again to resume" in output


def test_results_dir_on_a_full_disk_is_refused_before_anything_runs(tiny_fs, tmp_path, capsys, tiny_data):
    code, output = bench(capsys, "run", write_matrix(tmp_path), "--data-dir", tiny_data,
                         "--results-dir", tiny_fs / "r")  # fmt: skip
    assert_clear(code, output, f"results directory {tiny_fs / 'r'} has", "MiB free")
    assert not (tiny_fs / "r" / "records.jsonl").exists()
