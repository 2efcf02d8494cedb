"""Property-style: randomly corrupted matrices, baselines and store lines (seeded, bounded in count and
time) through `bench plan`, `report` and `check`. Whatever the corruption, the command ends in a result
or one clear error line: never a traceback, never the catch-all line of an error no check caught."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import pytest
import yaml

import bench.__main__ as cli
from bench.core.matrix import load
from bench.core.records import RunRecord, Status
from bench.core.store import Store

SEED = 23
CASES = 40  # per kind of file
BUDGET_S = 60  # per kind: stop early rather than slow the suite
GOOD = {
    "name": "fuzz",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
    "train": {"max_steps": 2, "lr": 0.0002},
    "eval": {"limit": 10},
}
ODD_VALUES = [None, -1, 0, 2.5, 1e308, math.nan, math.inf, -math.inf, True, "x", "", [], {}, [1, 2], {"a": 1}]


def unexpected(code: int, output: str, command: str) -> bool:
    return "Traceback" in output or f"error: bench {command}:" in output or code not in (0, 1, 2)


def paths_of(node, prefix=()):
    """Every (path) to a value inside nested dicts and lists."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from paths_of(value, (*prefix, index))


def set_at(doc, path, value):
    if not path:
        return value
    node = doc
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return doc


def mutate_value(rng: random.Random, doc):
    doc = json.loads(json.dumps(doc))
    return set_at(doc, rng.choice(list(paths_of(doc))), rng.choice(ODD_VALUES))


def mutate_text(rng: random.Random, data: bytes) -> bytes:
    """Byte-level damage: a flipped byte, a cut, a duplicated span, a stray bracket or a non-UTF-8 byte."""
    i = rng.randrange(len(data))
    j = min(len(data), i + rng.randint(1, 40))
    return rng.choice([
        lambda: data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :],
        lambda: data[:i],
        lambda: data[:j] + data[i:j] + data[j:],
        lambda: data[:i] + rng.choice([b"[", b"{", b"]", b": ", b"\n  ", b"\xff", b"&a *a"]) + data[i:],
    ])()  # fmt: skip


def record(cell, phase, **fields) -> RunRecord:
    return RunRecord(
        cell_key=cell.key, cell_id=cell.id, cell=cell.to_dict(), phase=phase, status=Status.OK,
        started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", wall_s=60.0,
        **fields,
    )  # fmt: skip


@pytest.fixture
def filled(tmp_path):
    matrix = tmp_path / "fuzz.yaml"
    matrix.write_text(yaml.safe_dump(GOOD))
    cells = {c.id: c for c in load(matrix).cells}
    store = Store(tmp_path / "results")
    score = [{"task": "fpb", "scorer": "finlora", "n": 10, "accuracy": 0.8, "weighted_f1": 0.7}]
    for cell in cells.values():
        if not cell.is_base:
            store.append(record(cell, "train", metrics={"train_loss_last": 0.5, "steps": 2}))
        store.append(record(cell, "eval", scores=score))
    baseline = tmp_path / "baseline.json"
    argv = ["check", str(matrix), "--baseline", str(baseline), "--update", "--no-speed"]
    assert cli.main(argv + ["--results-dir", str(store.root)]) == 0
    return matrix, store, baseline


def commands(matrix: Path, store: Store, baseline: Path, reports: Path) -> list[list[str]]:
    results = ["--results-dir", str(store.root)]
    return [
        ["plan", str(matrix), *results],
        ["report", str(matrix), *results, "--reports-dir", str(reports)],
        ["check", str(matrix), "--baseline", str(baseline), "--no-speed", *results],
    ]


def run_all(capsys, argvs, what: str) -> list[str]:
    problems = []
    for argv in argvs:
        code = cli.main(argv)
        captured = capsys.readouterr()
        output = captured.out + captured.err
        if unexpected(code, output, argv[0]):
            problems.append(f"{what}: bench {argv[0]} exit {code}: {output.strip().splitlines()[-1:]}")
    return problems


def test_corrupted_matrices(tmp_path, capsys, filled):
    matrix, store, baseline = filled
    rng, start, problems = random.Random(SEED), time.monotonic(), []
    original = matrix.read_bytes()
    for case in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        if case % 2:
            damaged = mutate_text(rng, original)
        else:
            damaged = yaml.safe_dump(mutate_value(rng, GOOD)).encode()
        matrix.write_bytes(damaged)
        before = store.path.read_bytes()
        problems += run_all(capsys, commands(matrix, store, baseline, tmp_path / "reports"), f"case {case}")
        assert store.path.read_bytes() == before
    assert not problems, "\n".join(problems)


def test_corrupted_baselines(tmp_path, capsys, filled):
    matrix, store, baseline = filled
    rng, start, problems = random.Random(SEED + 1), time.monotonic(), []
    good = json.loads(baseline.read_text())
    for case in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        if case % 3 == 2:
            baseline.write_bytes(mutate_text(rng, json.dumps(good).encode()))
        else:
            baseline.write_text(json.dumps(mutate_value(rng, good)))
        problems += run_all(
            capsys, commands(matrix, store, baseline, tmp_path / "reports")[2:], f"case {case}"
        )
    assert not problems, "\n".join(problems)


def test_corrupted_records(tmp_path, capsys, filled):
    matrix, store, baseline = filled
    rng, start, problems = random.Random(SEED + 2), time.monotonic(), []
    lines = store.path.read_bytes().split(b"\n")[:-1]
    for case in range(CASES):
        if time.monotonic() - start > BUDGET_S:
            break
        index = rng.randrange(len(lines))
        if case % 2:
            damaged = mutate_text(rng, lines[index]).replace(b"\n", b" ")
        else:
            damaged = json.dumps(mutate_value(rng, json.loads(lines[index]))).encode()
        store.path.write_bytes(b"\n".join([*lines[:index], damaged, *lines[index + 1 :]]) + b"\n")
        before = store.path.read_bytes()
        problems += run_all(capsys, commands(matrix, store, baseline, tmp_path / "reports"), f"case {case}")
        assert store.path.read_bytes() == before
    assert not problems, "\n".join(problems)
