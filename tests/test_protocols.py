"""Evaluation protocols: their settings as data, the text each scores, the lm-eval tasks that carry
them, and how a matrix names them (cell keys of matrices without a protocol do not move)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from bench.core.cell import Cell
from bench.core.matrix import MatrixError, parse
from bench.core.protocols import PROTOCOLS, get, scored_text
from bench.core.tasks import builtin_tasks

TASKS = builtin_tasks()

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "models": {"smol": {"source": "tiny"}},
    "axes": {"model": ["smol"], "quant": [{"bits": 4, "rank": 4}], "task": ["fpb"]},
    "base": True,
}


def expand(**changes):
    return parse({**BASE, **changes}, Path("m.yaml"))


def test_each_protocol_fixes_decoding_tokens_eos_text_scorer_and_split():
    bench, y2024, y2025 = get("bench"), get("finlora-2024"), get("finlora-2025")
    assert (bench.decoding.sample, bench.max_new("fpb"), bench.max_new("xbrl_tags")) == (False, 10, 30)
    assert (bench.eos, bench.scored_text, bench.scorer) == ("all", "first_line", "finlora")
    assert bench.stops_early
    assert y2024.decoding.gen_kwargs() == {"do_sample": True, "temperature": 0.6, "top_p": 0.9}
    assert (y2024.max_new("fpb"), y2024.max_new("xbrl_value"), y2024.eos) == (20, 20, "tokenizer")
    assert (y2024.scored_text, y2024.scorer, y2024.stops_early) == ("after_answer", "finlora", False)
    assert y2024.test_task("fiqa_sa") == "fiqa_sa_fingpt" and y2024.test_task("fpb") == "fpb"
    assert y2024.batch_size("llama-3.1-8b", "sentiment") == 128
    assert y2024.batch_size("llama-3.1-70b", "ner") == 8 and y2024.batch_size("llama-3.1-8b", "xbrl") == 2
    assert y2025.decoding.gen_kwargs() == {"do_sample": False, "temperature": 0.0}
    assert (y2025.max_new("ner"), y2025.max_new("xbrl_tags"), y2025.scorer) == (10, 20, "finlora2025")
    assert y2025.batch_size("x", "fpb") == 1
    assert y2024.decoding.describe(7) == "sampled (T 0.6, top-p 0.9, seed 7)"


def test_scored_text_per_protocol_on_messy_continuations():
    messy = "\n positive\nAnswer: negative\n"
    assert scored_text("first_line", messy, "fpb") == "positive"
    # 2024: (prompt + continuation).split("Answer: ")[1] keeps everything up to the repeat, newlines too
    assert scored_text("after_answer", messy, "fpb") == "\n positive\n"
    talkative = " neutral. The news is positive"
    assert scored_text("after_answer", talkative, "fpb") == talkative
    # XBRL prompts end in "\nAnswer:"; the 2024 code split on that and stripped
    assert scored_text("after_answer", " us-gaap:Assets \nAnswer: x", "xbrl_tags") == "us-gaap:Assets"
    # 2025: after the LAST "Answer:" (with or without a space), stripped
    assert scored_text("after_last_answer", messy, "fpb") == "negative"
    assert scored_text("after_last_answer", " positive \n", "fpb") == "positive"
    with pytest.raises(ValueError, match="unknown scored text"):
        scored_text("second_line", messy, "fpb")


def _task_config(name: str) -> dict:
    """A task YAML with its includes resolved the way lm-eval merges them (child keys win)."""

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))
    raw = yaml.load((REPO / "tasks" / "lm-eval" / f"{name}.yaml").read_text(), Loader=Loader)
    if "include" in raw:
        return {**_task_config(Path(raw.pop("include")).stem), **raw}
    return raw


@pytest.mark.parametrize("protocol", sorted(PROTOCOLS))
@pytest.mark.parametrize("task", sorted(TASKS))
def test_every_protocol_task_yaml_carries_the_protocols_settings(protocol, task):
    """Stock `lm_eval --include_path tasks --tasks fpb_finlora2024` decodes and cuts as bench does."""
    p = get(protocol)
    config = _task_config(task + p.task_suffix)
    assert config["dataset_kwargs"] == {"bench_task": task}
    expected = {"until": [], **p.decoding.gen_kwargs(), "max_gen_toks": p.max_new(task)}
    assert config["generation_kwargs"] == expected
    filters = config["filter_list"][0]
    assert filters["filter"][0]["filter_fn"] == f"utils.{p.scored_text}"
    assert {m["metric"] for m in config["metric_list"]} >= {"acc_finlora", "acc_strict", "acc_finlora2025"}


def test_a_matrix_without_protocol_keeps_its_cell_keys():
    cells = expand().cells
    for cell in cells:
        data = cell.to_dict()
        assert "protocol" not in data["eval"] and "seed" not in data["eval"]
        assert Cell.from_dict(data).key == cell.key
        assert "__" not in cell.id.split("eval8bit")[-1]
    assert [c.key for c in cells] == ["06c463dc2b312c23", "fdd443aa8153fcff"]  # as before protocols


def test_protocol_axis_names_cells_and_fills_the_sources_batch():
    m = expand(axes={**BASE["axes"], "protocol": ["bench", "finlora-2024", "finlora-2025"]})
    by_protocol = {(c.eval.protocol, c.is_base): c for c in m.cells}
    assert len(m.cells) == 6 and len({c.key for c in m.cells}) == 6
    assert by_protocol[("finlora-2024", False)].id.endswith("__finlora-2024")
    assert by_protocol[("finlora-2024", True)].eval.batch_size == 128
    assert by_protocol[("finlora-2025", True)].eval.batch_size == 1
    assert by_protocol[("bench", True)].eval.batch_size == 8
    assert by_protocol[("finlora-2025", False)].to_dict()["eval"]["protocol"] == "finlora-2025"
    kept = expand(eval={"protocol": "finlora-2024", "batch_size": 16, "seed": 3}).cells[0]
    assert (kept.eval.batch_size, kept.eval.seed) == (16, 3)


@pytest.mark.parametrize(
    "evals, message",
    [
        ({"protocol": "finlora-2023"}, "key 'eval.protocol': unknown protocol 'finlora-2023'; did you mean"),
        ({"protocol": "finlora-2024", "seed": -1}, "key 'eval.seed': must be a whole number >= 0"),
    ],
)
def test_protocol_mistakes_name_file_key_and_fix(evals, message):
    with pytest.raises(MatrixError, match=message.replace("(", r"\(")):
        expand(eval=evals)


def test_an_unknown_protocol_on_the_axis_names_the_axis():
    with pytest.raises(
        MatrixError, match="m.yaml: key 'axes.protocol': unknown protocol 'finlora2024'; did you"
    ):
        expand(axes={**BASE["axes"], "protocol": ["finlora2024"]})
