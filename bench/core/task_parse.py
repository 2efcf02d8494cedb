"""Validating a task file's mapping into a TaskSpec (bench.core.tasks). Pure (no torch).

Every mistake names the file, the key and the fix, before any data or model is read.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import jinja2
import jinja2.meta

from bench.core.tasks import (
    ANSWER_KEYS,
    ANSWER_TYPES,
    DATA_KEYS,
    FINLORA_RULES,
    FORMAT_VERSION,
    FORMATS,
    HUB_KEYS,
    NAME_RE,
    SPLIT_KEYS,
    TOP_KEYS,
    DataSpec,
    HubData,
    SplitRule,
    TaskError,
    TaskSpec,
)

# Autoescape off: prompts are plain text. keep_trailing_newline: a prompt's last "\n" is part of it.
ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, fix: str):
        raise TaskError(f"{self.path}: key '{key}': {fix}" if key else f"{self.path}: {fix}")

    def check_keys(self, mapping: dict, allowed, prefix: str = ""):
        for key in mapping:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(allowed)}"
                self.fail(f"{prefix}{key}", f"unknown key; {hint}")


def parse_task(raw, path: Path, sha256: str, builtin: bool) -> TaskSpec:
    at = _Where(path)
    if not isinstance(raw, dict):
        at.fail("", "a task file is a mapping with keys like bench_task, name, data, prompt, answer")
    at.check_keys(raw, TOP_KEYS)
    if raw.get("bench_task") != FORMAT_VERSION:
        at.fail("bench_task", f"must be {FORMAT_VERSION} (the task file format's version)")
    name = raw.get("name", path.stem)
    if not isinstance(name, str) or not NAME_RE.match(name):
        at.fail("name", "use a letter then letters, digits or '_' (it names lm-eval tasks and files)")
    answer, labels, rule = _answer(at, raw.get("answer"))
    prompt, target = _template(at, raw, "prompt"), _template(at, raw, "target")
    family = raw.get("family", answer)
    if not isinstance(family, str) or not family:
        at.fail("family", "must be a name, e.g. sentiment")
    return TaskSpec(
        name=name,
        file=path.resolve(),
        sha256=sha256,
        builtin=builtin,
        data=_data(at, raw.get("data")),
        split=_split(at, raw.get("split", {})),
        prompt=prompt,
        target=target,
        answer=answer,
        labels=labels,
        finlora_rule=rule,
        family=family,
        max_new_tokens=_budgets(at, raw.get("max_new_tokens", {})),
        label_map=_label_map(at, raw.get("label_map", {}), labels),
        variant_of=_optional_str(at, raw, "variant_of"),
        description=str(raw.get("description", "")),
        sources=_sources(at, name, raw.get("sources")),
    )


def _sources(at: _Where, name: str, raw) -> tuple:
    from bench.core.sources import SourceError, parse_sources

    if raw is None:
        return ()
    try:
        return parse_sources({name: {"sources": raw}}, str(at.path))[name]
    except SourceError as exc:
        raise TaskError(str(exc)) from exc


def _optional_str(at: _Where, raw: dict, key: str) -> str | None:
    value = raw.get(key)
    if value is not None and not isinstance(value, str):
        at.fail(key, "must be a string")
    return value


def _answer(at: _Where, raw) -> tuple[str, tuple[str, ...], str]:
    if not isinstance(raw, dict) or "type" not in raw:
        at.fail("answer", "give the answer type: {type: label, labels: [a, b, c]} or {type: extraction}")
    at.check_keys(raw, ANSWER_KEYS, "answer.")
    kind = raw["type"]
    if kind not in ANSWER_TYPES:
        at.fail("answer.type", f"{kind!r} is not one of {', '.join(ANSWER_TYPES)}")
    labels = raw.get("labels", [])
    if kind == "label":
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
        ):
            at.fail("answer.labels", "a label task needs a list of at least two label strings")
        if len(set(labels)) != len(labels):
            at.fail("answer.labels", "a label is listed twice")
    elif labels:
        at.fail("answer.labels", "an extraction task has no label set; remove 'labels' or use type: label")
    rule = raw.get("finlora_rule", "generic" if kind == "label" else "xbrl")
    if rule not in FINLORA_RULES:
        at.fail("answer.finlora_rule", f"{rule!r} is not one of {', '.join(FINLORA_RULES)}")
    if (rule == "xbrl") != (kind == "extraction"):
        at.fail("answer.finlora_rule", "xbrl is the rule of extraction tasks; label tasks take another")
    return kind, tuple(labels), rule


def _template(at: _Where, raw: dict, key: str) -> str:
    text = raw.get(key)
    if not isinstance(text, str) or not text:
        example = '"Input: {{ text }}\\nAnswer: "' if key == "prompt" else '"{{ label }}" or label'
        at.fail(key, f"give a Jinja template over the row's columns, e.g. {key}: {example}")
    if key == "target" and "{" not in text:
        text = "{{ " + text + " }}"  # a bare column name
    try:
        ENV.parse(text)
    except jinja2.TemplateSyntaxError as exc:
        at.fail(key, f"not a valid template (line {exc.lineno}: {exc.message})")
    return text


def template_columns(template: str) -> set[str]:
    return jinja2.meta.find_undeclared_variables(ENV.parse(template))


def renderer(template: str):
    """row -> text. A template that is one bare column (`{{ context }}`, every FinLoRA task) is a plain
    lookup: Jinja's render costs ~130 us a row, 9 s over the FinLoRA files at every load."""
    from jinja2 import nodes

    body = ENV.parse(template).body
    if len(body) == 1 and isinstance(body[0], nodes.Output) and len(body[0].nodes) == 1:
        only = body[0].nodes[0]
        if isinstance(only, nodes.Name):
            return lambda row: _text(row[only.name])
    compiled = ENV.from_string(template)
    return lambda row: compiled.render(**row)


def _text(value) -> str:
    return value if isinstance(value, str) else str(value)  # what Jinja renders for a number


def _data(at: _Where, raw) -> DataSpec:
    if not isinstance(raw, dict):
        at.fail("data", "say where the rows are: {train: data/train.csv, test: data/test.csv} or {hub: ...}")
    at.check_keys(raw, DATA_KEYS, "data.")
    fmt = raw.get("format")
    if fmt is not None and fmt not in set(FORMATS.values()):
        at.fail("data.format", f"{fmt!r} is not one of {', '.join(sorted(set(FORMATS.values())))}")
    if "hub" in raw:
        return DataSpec(root=at.path.parent, in_data_dir=False, format=fmt, hub=_hub(at, raw["hub"]))
    names = {side: _names(at, raw.get(side), f"data.{side}") for side in ("train", "test")}
    if not names["train"] and not names["test"]:
        at.fail("data", "give data.train and/or data.test (file names), or data.hub")
    for side, files in names.items():
        for name in files:
            if fmt is None and Path(name).suffix not in FORMATS:
                at.fail(
                    f"data.{side}", f"{name}: unknown file type; use {', '.join(FORMATS)} or set data.format"
                )
    folder = raw.get("folder")
    if folder is not None and (not isinstance(folder, str) or not folder or Path(folder).is_absolute()):
        at.fail("data.folder", "a sub-folder of the data directory (--data-dir / BENCH_DATA), e.g. fpb")
    root = Path(folder) if folder else at.path.parent.resolve()
    return DataSpec(
        root=root, in_data_dir=folder is not None, train=names["train"], test=names["test"], format=fmt
    )


def _names(at: _Where, raw, key: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    values = [raw] if isinstance(raw, str) else raw
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        at.fail(key, "a file name or a list of them (the first that exists is read)")
    return tuple(values)


def _hub(at: _Where, raw) -> HubData:
    if not isinstance(raw, dict) or not isinstance(raw.get("path"), str):
        at.fail("data.hub", "needs path (org/name) and may give name, revision, train, test (split names)")
    at.check_keys(raw, HUB_KEYS, "data.hub.")
    for key in ("name", "revision", "train", "test"):
        if raw.get(key) is not None and not isinstance(raw[key], str):
            at.fail(f"data.hub.{key}", "must be a string")
    return HubData(
        raw["path"], raw.get("name"), raw.get("revision"), raw.get("train", "train"), raw.get("test")
    )


def _split(at: _Where, raw) -> SplitRule:
    if not isinstance(raw, dict):
        at.fail("split", "a mapping like {test_fraction: 0.3, seed: my-seed, group_by: sentence}")
    at.check_keys(raw, SPLIT_KEYS, "split.")
    fraction = raw.get("test_fraction", 0.3)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        at.fail("split.test_fraction", f"must be a number between 0 and 1, not {fraction!r}")
    seed = raw.get("seed", SplitRule.seed)
    if not isinstance(seed, str | int) or isinstance(seed, bool):
        at.fail("split.seed", "a string or a whole number (it salts the hash that splits the rows)")
    group = raw.get("group_by")
    if group is not None and not isinstance(group, str):
        at.fail("split.group_by", "a column name (rows sharing it stay on one side)")
    return SplitRule(float(fraction), str(seed), group)


def _budgets(at: _Where, raw) -> dict:
    from bench.core.protocols import PROTOCOLS

    if not isinstance(raw, dict):
        at.fail("max_new_tokens", "a mapping of protocol -> new tokens, e.g. {bench: 10}")
    at.check_keys(raw, tuple(PROTOCOLS), "max_new_tokens.")
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            at.fail(f"max_new_tokens.{name}", f"must be a positive whole number, not {value!r}")
    return dict(raw)


def _label_map(at: _Where, raw, labels: tuple[str, ...]) -> dict:
    if not isinstance(raw, dict):
        at.fail("label_map", "a mapping of raw target value -> label, e.g. {0: dovish, 1: hawkish}")
    out = {}
    for key, value in raw.items():
        if isinstance(key, float) and not math.isfinite(key):
            at.fail("label_map", f"{key!r} is not a value a target can have")
        if labels and value not in labels:
            at.fail(f"label_map.{key}", f"{value!r} is not in answer.labels ({', '.join(labels)})")
        out[str(key)] = str(value)
    return out
