"""Too-long training prompts lose the middle of their input text, never the instruction or the answer
tail; rows that cannot fit so are refused by name; the record counts truncated rows per task."""

from __future__ import annotations

import pytest

from bench.core.data import load_splits
from bench.workers.examples import IGNORE, TrainingRow, encode, encode_rows
from bench.workers.truncation import PromptTooLong, truncated_by_task

MAX_LEN = 256  # the longest NER train rows take ~800 tiny-tokenizer tokens; the median ~110


@pytest.fixture(scope="module")
def tokenizer(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


@pytest.fixture(scope="module")
def longest_ner(data_dir, tokenizer):
    rows = load_splits("ner", data_dir).train
    return sorted(rows, key=lambda r: len(r["context"]))[-20:]


def test_the_longest_ner_rows_keep_instruction_and_answer_tail(tokenizer, longest_ner):
    for row in longest_ner:
        prompt = row["context"]
        e = encode(tokenizer, prompt, row["target"], MAX_LEN)
        assert e.truncated and len(e.input_ids) <= MAX_LEN
        kept = tokenizer.decode([t for t, lab in zip(e.input_ids, e.labels, strict=True) if lab == IGNORE],
                                skip_special_tokens=True)  # fmt: skip
        head = prompt[: prompt.find("\nInput:") + len("\nInput:")]
        assert head.startswith("Instruction: ") and "entity type" in head and "\nOptions: " in head
        assert kept.startswith(head), kept[:200]  # the instruction and the entity asked about
        assert kept.endswith("\nAnswer: ")
        assert len(kept) < len(prompt)  # the middle of the input went
        target = [t for t in e.labels if t != IGNORE]
        assert target == tokenizer(row["target"], add_special_tokens=False).input_ids + [
            tokenizer.eos_token_id
        ]


def test_a_prompt_that_fits_is_tokenized_as_a_whole(tokenizer, data_dir):
    row = load_splits("fpb", data_dir).train[0]
    e = encode(tokenizer, row["context"], row["target"], MAX_LEN)
    assert not e.truncated
    assert e.input_ids[:-2] == tokenizer(row["context"]).input_ids[: len(e.input_ids) - 2]
    assert e.input_ids[: len(tokenizer(row["context"]).input_ids)] == tokenizer(row["context"]).input_ids


def test_rows_that_cannot_fit_are_refused_by_name(tokenizer, longest_ner):
    no_marker = '"no input marker ' * 200 + "\nAnswer:"
    rows = [TrainingRow("ner", 7, longest_ner[0]["context"], "person"),
            TrainingRow("xbrl_tags", 3, no_marker, "us-gaap:Assets")]  # fmt: skip
    with pytest.raises(PromptTooLong) as caught:
        encode_rows(tokenizer, rows, 20)  # less than the instruction alone
    message = str(caught.value)
    assert "2 training rows cannot fit train.max_seq_len=20" in message
    assert "ner row 7: its instruction and answer tail alone take" in message
    assert "xbrl_tags row 3:" in message and "no '\\nInput: ... \\nAnswer:' to cut inside" in message


def test_truncated_rows_are_counted_per_task():
    counts = truncated_by_task(["ner", "fpb", "ner", "ner"], [True, False, False, True])
    assert counts == {"ner": 2, "fpb": 0}
