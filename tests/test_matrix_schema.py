"""The committed JSON Schema for matrix files is what the validator's definitions generate, every
committed matrix passes it, and a few mistakes the validator refuses fail it too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from bench.core.matrix_schema import schema, text

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "matrices" / "matrix.schema.json"


def test_committed_schema_is_current():
    assert COMMITTED.read_text() == text(), (
        "matrices/matrix.schema.json is stale; python -m bench.core.matrix_schema > it"
    )


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(json.loads(COMMITTED.read_text()))


@pytest.mark.parametrize("path", sorted((REPO / "matrices").glob("*.yaml")), ids=lambda p: p.name)
def test_committed_matrices_pass_the_schema(validator, path):
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors, errors


GOOD = {"models": {"tiny": {"source": "tiny"}}, "axes": {"model": ["tiny"], "task": ["fpb"], "bits": [4]}}


@pytest.mark.parametrize(
    "doc",
    [
        {**GOOD, "trian": {}},
        {**GOOD, "train": {"lrr": 1}},
        {**GOOD, "train": {"optimizer": "sgd"}},
        {**GOOD, "train": {"batch_per_gpu": 2.5}},
        {**GOOD, "axes": {**GOOD["axes"], "bits": [5]}},
        {**GOOD, "axes": {**GOOD["axes"], "task": [["fpb"]]}},
        {**GOOD, "models": {"tiny": {"weights": "random"}}},
        {**GOOD, "name": "n" * 101},
    ],
    ids=["top key", "train key", "optimizer", "int", "bits", "task shape", "no source", "long name"],
)
def test_schema_refuses_what_the_validator_refuses(validator, doc):
    assert list(validator.iter_errors(doc))
