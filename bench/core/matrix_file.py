"""Reading a matrix file: UTF-8 text, YAML nested at most MAX_DEPTH deep, no key given twice, and names
that fit a file name on every filesystem bench writes to. Pure; bench.core.matrix validates what it reads.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from bench.core.text_file import read_utf8


class MatrixError(Exception):
    """A matrix file is wrong; the message names the file, the key and the fix."""


class _Where:
    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, fix: str):
        raise MatrixError(f"{self.path}: key '{key}': {fix}")


def read_yaml(path: Path):
    """The matrix file's YAML: UTF-8 text, nesting at most MAX_DEPTH deep, no key given twice."""
    if not path.is_file():
        raise MatrixError(f"{path}: no such matrix file")
    _, text = read_utf8(path, MatrixError, "save the matrix as UTF-8 YAML")
    try:
        return yaml.load(text, Loader=MatrixLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise MatrixError(f"{path}:{where}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from exc


MAX_DEPTH = 50  # the deepest real matrix nests 5 levels; 20,000 '[' must not reach a RecursionError
# Names become file names (reports/<name>.html, results/<cell id>-<key>/...): short enough for every
# filesystem bench writes to (eCryptfs allows 143 bytes a name, ext4 and most others 255).
MAX_NAME = 100
MAX_MODEL_NAME = 64
MAX_CELL_DIRNAME = 143


class MatrixLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (the last would win silently)
    and nesting deeper than MAX_DEPTH."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue  # an unhashable key: SafeConstructor's own error names it
            if first != key_node.start_mark.line + 1:
                line = key_node.start_mark.line + 1
                problem = f"key {key!r} is given twice (lines {first} and {line}); keep one"
                raise yaml.constructor.ConstructorError(None, None, problem, key_node.start_mark)
        return super().construct_mapping(node, deep)


def check_file_names(path: Path, name: str, cells) -> None:
    """Every name that becomes a file or folder name fits one on every filesystem bench writes to."""
    ctx = _Where(path)
    if len(name) > MAX_NAME:
        ctx.fail("name", f"{len(name)} characters; use at most {MAX_NAME} (it names the report files)")
    for model in {c.model.name for c in cells}:
        if len(model) > MAX_MODEL_NAME:
            fix = f"a short name of {len(model)} characters; at most {MAX_MODEL_NAME} (it names each cell's "
            ctx.fail(f"models.{model[:40]}...", fix + "folder); 'source' holds the model's full id")
    for cell in cells:
        if len(cell.dirname.encode()) > MAX_CELL_DIRNAME:
            size = len(cell.dirname.encode())
            ctx.fail("axes", f"cell {cell.id} makes a folder name of {size} bytes, more than "
                     f"{MAX_CELL_DIRNAME}; use shorter model names or fewer variant axes")  # fmt: skip
