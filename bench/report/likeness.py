"""Is one of our numbers like for like with a published one? Aspect by aspect, from the records and
the source's description in published.yaml. Pure (no torch).

A row is "like for like" only when every criterion matches, grouped as the report shows them: the model
(by identity: bench.report.recipe_likeness), the training recipe (training data and mix, the labels
trained on, bits, rank, LoRA method / alpha / dropout / targets, optimizer, precision, learning rate,
warmup, epochs, global batch, weight decay, train split) and the evaluation (protocol: decoding, new
tokens, eos, the text scored; scorer, test split (the same file, all of it), test labels, eval bits,
eval batch where 8-bit outputs depend on it, and the order in which F1's arguments were passed).
Anything the source does not state counts as a difference: a match is never assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath

from bench.core import protocols
from bench.core.catalog import tasks as known_tasks
from bench.core.cell import Cell
from bench.report.recipe_likeness import model_differences, recipe_for, training_criteria

TEXTS = {
    "first_line": "first non-empty line",
    "after_answer": "continuation up to a repeated 'Answer: '",
    "after_last_answer": "text after the last 'Answer:'",
}
EOS = {"all": "every eos id", "tokenizer": "tokenizer's eos id only"}


@dataclass(frozen=True)
class Likeness:
    matches: tuple[str, ...]
    model: tuple[str, ...] = ()  # differences, grouped as the report lists them
    training: tuple[str, ...] = ()
    evaluation: tuple[str, ...] = ()

    @property
    def differs(self) -> tuple[str, ...]:
        return self.model + self.training + self.evaluation

    @property
    def like_for_like(self) -> bool:
        return not self.differs

    @property
    def verdict(self) -> str:
        """ "yes" only when everything matches; another model is "for orientation only", never "no"
        (a difference in the recipe) and never "yes"."""
        return "for orientation only" if self.model else ("yes" if self.like_for_like else "no")

    def grouped(self) -> str:
        """ "Model: ... | Training: ...; ... | Evaluation: ...", or "—" when nothing differs."""
        model = tuple(d.removeprefix("model: ") for d in self.model)
        parts = (("Model", model), ("Training", self.training), ("Evaluation", self.evaluation))
        return " | ".join(f"{name}: {'; '.join(found)}" for name, found in parts if found) or "—"


def published_task(task: str) -> str:
    """The published task a (variant) task is compared with: fiqa_sa_fingpt -> fiqa_sa."""
    spec = known_tasks().get(task)
    return (spec.variant_of if spec else None) or task


def source_test_file(block: dict, task: str) -> str:
    task = published_task(task)
    return (block.get("bench_test_files") or {}).get(task) or _default_test_file(task)


def _default_test_file(task: str) -> str:
    """A task's first test file as the records name it (its data folder / file name)."""
    spec = known_tasks()[task]
    return f"{spec.folder_name}/{spec.data.test[0] if spec.data.test else '(local split)'}"


def source_eval_bits(block: dict, key: str) -> int | None:
    bits = block.get("eval_bits")
    return bits.get(key) if isinstance(bits, dict) else bits


def likeness_to_source(
    block: dict, key: str, task: str, cell: Cell, score: dict, split: dict, trained: dict | None = None
) -> Likeness:
    """`key` is the published configuration ("8b_4bit_r4"), `cell` ours, `score` our record's score
    entry, `split` our test split's info (test_file, test_rows, local_split) and the cell's eval limit,
    `trained` our train record's {"metrics", "data"} (None for a base row or before training)."""
    matches: list[str] = []

    def group(criteria: list[tuple[str, list[str]]]) -> tuple[str, ...]:
        found = []
        for name, problems in criteria:
            found.extend(problems) if problems else matches.append(name)
        return tuple(found)

    model = group([("model", model_differences(block, key, cell))])
    training = group(_training(block, key, task, cell, trained or {}))
    evaluation = group(_evaluation(block, key, task, cell, score, split))
    return Likeness(tuple(matches), model, training, evaluation)


def _training(block: dict, key: str, task: str, cell: Cell, trained: dict) -> list[tuple[str, list[str]]]:
    config = (block.get("bench_configs") or {}).get(key) or {}
    if cell.is_base or config.get("bits") is None:
        theirs = "none (base)" if config.get("bits") is None else f"{config['bits']}-bit r{config['rank']}"
        ours = "none (base)" if cell.is_base else f"{cell.bits}-bit r{cell.rank}"
        return [("adapter", [] if ours == theirs else [f"adapter: ours {ours}, theirs {theirs}"])]
    recipe = recipe_for(block, published_task(task))
    if recipe is None:
        return [("training recipe", ["training recipe: theirs not stated"])]
    return training_criteria(recipe, cell, config, trained.get("metrics") or {}, trained.get("data") or [])


def _evaluation(
    block: dict, key: str, task: str, cell: Cell, score: dict, split: dict
) -> list[tuple[str, list[str]]]:
    scorer = block.get("bench_scorer", "finlora")
    labels, rows = _split(block, task, score, split)
    theirs = source_eval_bits(block, key)
    bits = (
        []
        if theirs == cell.eval_bits
        else [f"eval bits: ours {cell.eval_bits}, theirs {theirs or 'not stated'}"]
    )
    swapped = published_task(task) in (block.get("bench_f1_swapped") or [])
    return [
        ("protocol", _protocol(block, task, score)),
        (
            "scorer",
            [] if score.get("scorer") == scorer else [f"scorer: ours {score.get('scorer')}, theirs {scorer}"],
        ),
        ("split", rows),
        ("labels", labels),
        ("eval bits", bits),
        ("eval batch", _eval_batch(block, key, task, cell)),
        (
            "F1 order",
            ["F1: the source passed (prediction, gold) to f1_score, ours (gold, prediction)"] * swapped,
        ),
    ]


def _eval_batch(block: dict, key: str, task: str, cell: Cell) -> list[str]:
    """Only where it changes outputs: LLM.int8 (8-bit) results depend on the rows batched together."""
    if cell.eval_bits != 8:
        return []
    batches = block.get("bench_eval_batch") or {}
    model = ((block.get("bench_configs") or {}).get(key) or {}).get("model")
    family = known_tasks()[task].family if task in known_tasks() else None
    theirs = batches.get(family) or batches.get(model) or batches.get("default")
    ours = cell.eval.batch_size
    if theirs == ours:
        return []
    return [
        f"eval batch (8-bit outputs depend on batch neighbours): ours {ours}, theirs {theirs or 'not stated'}"
    ]


def _protocol(block: dict, task: str, score: dict) -> list[str]:
    theirs = protocols.get(block.get("bench_protocol", protocols.DEFAULT_PROTOCOL))
    ours = protocols.get(score.get("protocol") or protocols.DEFAULT_PROTOCOL)
    out = []
    if _draws(ours.decoding) != _draws(theirs.decoding):
        mine, source = ours.decoding.describe(score.get("seed")), theirs.decoding.describe("not recorded")
        out.append(f"decoding: ours {mine}, theirs {source}")
    mine, want = score.get("max_new_tokens") or ours.max_new(task), theirs.max_new(published_task(task))
    if mine != want:
        out.append(f"new tokens: ours {mine}, theirs {want}")
    if ours.scored_text != theirs.scored_text:
        out.append(f"scored text: ours {TEXTS[ours.scored_text]}, theirs {TEXTS[theirs.scored_text]}")
    if ours.eos != theirs.eos:
        out.append(f"eos: ours {EOS[ours.eos]}, theirs {EOS[theirs.eos]}")
    return out


def _draws(decoding: protocols.Decoding) -> tuple:
    return decoding.sample, decoding.temperature, decoding.top_p


def _split(block: dict, task: str, score: dict, split: dict) -> tuple[list[str], list[str]]:
    """(label differences, split differences)."""
    mine = score.get("test_file") or _short(split.get("test_file")) or _default_test_file(task)
    theirs = source_test_file(block, task)
    labels, rows = [], []
    if split.get("local_split") or score.get("local_split"):
        rows.append("split: ours a local split of the data, theirs " + theirs)
    elif mine != theirs:
        note = (block.get("bench_label_notes") or {}).get(published_task(task))
        if note:
            labels.append(f"labels: {note}")
        else:
            rows.append(f"split: ours {mine}, theirs {theirs}")
    total, n, limit = split.get("test_rows"), score.get("n"), split.get("limit")
    if n and total and n < total:
        rows.append(f"rows: ours the first {n} of {total}")
    elif n and not total and limit and n <= limit:  # records without the split's size: the limit tells
        rows.append(f"rows: ours the first {n} (eval limit {limit})")
    return labels, rows


def _short(path: str | None) -> str | None:
    return f"{PurePath(path).parent.name}/{PurePath(path).name}" if path else None
