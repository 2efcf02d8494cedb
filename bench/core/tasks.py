"""A task is one declarative YAML file: where its rows come from, how they split, the prompt, the
answer and how it is scored, its new-token budgets. Pure (no torch).

The FinLoRA tasks ship as such files (tasks/*.yaml in the repository, `bench.tasks` when installed);
a user's own tasks are the same kind of file in a folder of theirs (`tasks_dir:` in a matrix, or
`--tasks-dir`). Everything else that knows about tasks reads these specs: the catalog, the scorers'
label sets, the lm-eval YAMLs (bench.core.task_yaml generates them), the data loader.

    bench_task: 1                      # format version; marks the file as a bench task
    name: fomc_stance                  # default: the file name
    description: ...
    data:                              # local files (relative to this file) or `folder:` in the data dir
      train: data/train.csv            # a name or a list (the first that exists wins)
      test: data/test.csv              # optional: without it, a seeded hash split of train
      format: csv                      # json | csv | parquet; default from the extension
      # hub: {path: org/name, name: config, revision: <sha>, train: train, test: test}
    split: {test_fraction: 0.3, seed: bench-local-split-v1, group_by: sentence}
    prompt: "Instruction: ...\\nInput: {{ sentence }}\\nAnswer: "   # Jinja over the row's columns
    target: "{{ stance }}"             # or a column name
    label_map: {0: dovish, 1: hawkish} # optional: raw target value -> label
    answer: {type: label, labels: [dovish, hawkish, neutral]}   # or {type: extraction}
    max_new_tokens: {bench: 10}        # per protocol; default from the protocol and the answer type
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from bench.core.text_file import read_utf8

FORMAT_VERSION = 1
ANSWER_TYPES = ("label", "extraction")
# How the `finlora` scorer maps a free-text output to a label: FinLoRA's own rules for its tasks
# (bench.core.scoring), `generic` for any other label set, `xbrl` (starts-with) for extraction.
FINLORA_RULES = ("sentiment", "headline", "ner", "generic", "xbrl")
FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}
GROUP_FINLORA_INPUT = "finlora_input"  # the `Input:` text of a FinLoRA prompt (bench.core.data.group_key)
DEFAULT_SPLIT_SEED = "bench-local-split-v1"
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
TOP_KEYS = (
    "bench_task", "name", "description", "family", "variant_of", "data", "split", "prompt", "target",
    "label_map", "answer", "max_new_tokens", "sources",
)  # fmt: skip
DATA_KEYS = ("folder", "train", "test", "format", "hub")
HUB_KEYS = ("path", "name", "revision", "train", "test")
SPLIT_KEYS = ("test_fraction", "seed", "group_by")
ANSWER_KEYS = ("type", "labels", "finlora_rule")

# tasks/ at the top of the repository is installed as the package data `bench.tasks` (pyproject's
# package-dir): the task files, and under lm-eval/ the lm-eval YAMLs generated from them.
BUILTIN_DIR = Path(str(resources.files("bench.tasks")))


class TaskError(Exception):
    """A task file is wrong; the message names the file, the key or row, and the fix."""


@dataclass(frozen=True)
class HubData:
    path: str
    name: str | None = None
    revision: str | None = None
    train: str | None = "train"
    test: str | None = None


@dataclass(frozen=True)
class DataSpec:
    root: Path  # where train/test names are looked up: the task file's folder or data_dir/folder
    in_data_dir: bool  # True: root is relative to the data directory (`folder:`)
    train: tuple[str, ...] = ()
    test: tuple[str, ...] = ()
    format: str | None = None
    hub: HubData | None = None


@dataclass(frozen=True)
class SplitRule:
    test_fraction: float = 0.3
    seed: str = DEFAULT_SPLIT_SEED
    group_by: str | None = None  # a column, finlora_input, or None = the rendered prompt


@dataclass(frozen=True, eq=False)  # one object per loaded file: hashed by identity (caches key on it)
class TaskSpec:
    name: str
    file: Path
    sha256: str  # of the task file's bytes
    builtin: bool
    data: DataSpec
    split: SplitRule
    prompt: str
    target: str
    answer: str  # label | extraction
    labels: tuple[str, ...]
    finlora_rule: str
    family: str  # what the task is (sentiment, headline, ner, xbrl; or its answer type for user tasks)
    max_new_tokens: dict = field(default_factory=dict)  # protocol name -> new tokens
    label_map: dict = field(default_factory=dict)
    variant_of: str | None = None  # scored with, and compared as, the task it varies
    description: str = ""
    sources: tuple = ()  # public sources of the data files (bench data fetch)

    @property
    def is_label(self) -> bool:
        return self.answer == "label"

    @property
    def folder_name(self) -> str:
        """The folder records name the task's files by: its data-directory folder, or its file's folder."""
        return self.data.root.name if self.data.in_data_dir else self.file.parent.name


def load_file(path: Path, builtin: bool = False) -> TaskSpec:
    from bench.core.task_parse import parse_task

    path = Path(path)
    data, text = read_utf8(path, TaskError, "save the task file as UTF-8 YAML")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise TaskError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from exc
    return parse_task(raw, path, hashlib.sha256(data).hexdigest(), builtin)


def is_task_file(path: Path) -> bool:
    """A YAML file that declares itself a bench task (`bench_task:`); anything else is left alone."""
    try:
        head = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return path.suffix in (".yaml", ".yml")  # broken: let load_file name the problem
    return isinstance(head, dict) and "bench_task" in head


def load_folder(folder: Path, builtin: bool = False) -> dict[str, TaskSpec]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TaskError(f"{folder}: no such tasks folder (tasks_dir / --tasks-dir)")
    specs: dict[str, TaskSpec] = {}
    for path in sorted(p for p in folder.glob("*.y*ml") if is_task_file(p)):
        spec = load_file(path, builtin)
        if spec.name in specs:
            raise TaskError(f"{path}: task {spec.name!r} is already defined in {specs[spec.name].file}")
        specs[spec.name] = spec
    return specs


# The order of the paper's tables, which reports follow; any other task comes after, by name.
PAPER_ORDER = ("fpb", "fiqa_sa", "tfns", "nwgi", "headline", "ner", "xbrl_tags", "xbrl_value")


@lru_cache(maxsize=1)
def builtin_tasks() -> dict[str, TaskSpec]:
    specs = load_folder(BUILTIN_DIR, builtin=True)
    rank = {name: i for i, name in enumerate(PAPER_ORDER)}
    return {name: specs[name] for name in sorted(specs, key=lambda n: (rank.get(n, len(rank)), n))}


class Registry:
    """The tasks a process knows: the built-in ones and those of the task folders it was given."""

    def __init__(self):
        self._user: dict[str, TaskSpec] = {}

    def all(self) -> dict[str, TaskSpec]:
        return {**builtin_tasks(), **self._user}

    def get(self, name: str) -> TaskSpec:
        specs = self.all()
        if name not in specs:
            raise TaskError(f"unknown task {name!r}; known: {', '.join(specs)}")
        return specs[name]

    def add(self, spec: TaskSpec) -> None:
        known = self.all().get(spec.name)
        if known is not None and known.sha256 != spec.sha256:
            raise TaskError(
                f"{spec.file}: task {spec.name!r} is already defined in {known.file}; rename one of them"
            )
        self._user[spec.name] = spec

    def add_folder(self, folder: Path) -> list[TaskSpec]:
        specs = list(load_folder(folder).values())
        for spec in specs:
            self.add(spec)
        return specs

    def add_file(self, path: Path, sha256: str | None = None) -> TaskSpec:
        spec = load_file(Path(path))
        if sha256 and spec.sha256 != sha256:
            raise TaskError(
                f"{path}: the task file changed since its cells were made (sha256 {spec.sha256[:12]}, "
                f"expected {sha256[:12]}); plan the matrix again"
            )
        self.add(spec)
        return spec


REGISTRY = Registry()


def get(name: str) -> TaskSpec:
    return REGISTRY.get(name)
