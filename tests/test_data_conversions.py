"""Each named conversion (bench/fetching/conversions.py) on a small input built here.

The real upstream bytes: tests/test_data_fetch.py (test_upstream_bytes_give_the_data_folder_files).
"""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pyarrow as pa
import pytest

from bench.fetching.conversions import (
    NEWS,
    TWEET,
    ConversionError,
    convert,
    fiqa_fingpt_split,
    fpb_split,
)


def rows(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines()]


def prompt(instruction: str, text: str) -> str:
    return f"Instruction: {instruction}\nInput: {text}\nAnswer: "


def test_fpb_split_is_hugging_face_train_test_split_seed_42():
    labels = ("negative", "neutral", "positive")
    lines = [f"sentence {i} mails a@b.com@{labels[i % 3]}" for i in range(4846)]  # the last @ splits
    raw = ("\ufeff" + "\r\n".join(lines) + "\r\n").encode("utf-8")
    train, test = (rows(b) for b in fpb_split(raw))
    assert (len(train), len(test)) == (3634, 1212)
    perm = np.random.default_rng(42).permutation(4846)
    assert test[0] == {"context": prompt(NEWS, f"sentence {perm[0]} mails a@b.com"),
                       "target": labels[perm[0] % 3]}  # fmt: skip
    assert train[-1]["context"] == prompt(NEWS, f"sentence {perm[-1]} mails a@b.com")
    assert convert("fpb_train", [raw]) == fpb_split(raw)[0]
    with pytest.raises(ConversionError, match="expected 4846 lines"):
        fpb_split(raw[: len(raw) // 2])


def test_tfns_csv_maps_the_dataset_card_labels():
    raw = b'text,label\r\n"$A, $B - up",1\r\nplain tweet,2\r\n"He said ""no""",0\r\n'
    assert rows(convert("tfns_csv", [raw])) == [
        {"context": prompt(TWEET, "$A, $B - up"), "target": "positive"},
        {"context": prompt(TWEET, "plain tweet"), "target": "neutral"},
        {"context": prompt(TWEET, 'He said "no"'), "target": "negative"},
    ]
    with pytest.raises(ConversionError, match="CSV line 2"):
        convert("tfns_csv", [b"text,label\nx,3\n"])


def pixiu(query: str, answer: str) -> str:
    turns = [{"from": "human", "value": query}, {"from": "agent", "value": answer}]
    return json.dumps({"id": "x", "conversations": turns})


def test_pixiu_fiqasa_keeps_one_row_per_example():
    post = [pixiu(f"Template {i} for this financial post?\nText: $TSLA to the moon\nAnswer:", "Positive")
            for i in range(10)]  # fmt: skip
    news = [pixiu(f"Template {i} for this news headline?\nText: Profit falls\nAnswer:", "Negative")
            for i in range(10)]  # fmt: skip
    out = rows(convert("pixiu_fiqasa", ["\n".join(post + news).encode()]))
    assert out == [
        {"context": prompt(TWEET, "$TSLA to the moon"), "target": "positive"},
        {"context": prompt(NEWS, "Profit falls"), "target": "negative"},
    ]
    with pytest.raises(ConversionError, match="multiple of 10"):
        convert("pixiu_fiqasa", ["\n".join(post[:7]).encode()])


def test_pixiu_headlines_asks_fingpts_nine_questions_in_its_order():
    keys = ["Price or Not", "Direction Up", "Direction Down", "Direction Constant", "PastPrice",
            "FuturePrice", "PastNews", "FutureNews", "Asset Comparision"]  # fmt: skip
    answers = ["A0", "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8"]  # which template each answer came from
    lines = [
        pixiu(f"Is there a {k}?\nText: gold falls\nAnswer:", a) for k, a in zip(keys, answers, strict=True)
    ]
    out = rows(convert("pixiu_headlines", ["\n".join(lines).encode()]))
    assert [r["target"] for r in out] == ["A3", "A1", "A3", "A2", "A4", "A5", "A6", "A7", "A8"]
    assert out[0]["context"] == prompt(
        "Does the news headline talk about price? Please choose an answer from {Yes/No}.", "gold falls"
    )
    assert out[-1]["context"].startswith("Instruction: Does the news headline compare gold with any other")


def test_drop_doc_path_keeps_context_and_target_as_published():
    raw = (
        json.dumps({"context": '"XBRL é\nAnswer:', "target": "us-gaap:X", "doc_path": "a/b.xml"}) + "\n"
    ).encode()
    assert convert("drop_doc_path", [raw]) == (
        json.dumps({"context": '"XBRL é\nAnswer:', "target": "us-gaap:X"}, ensure_ascii=False) + "\n"
    ).encode("utf-8")


def arrow_stream(records: list[dict]) -> bytes:
    table = pa.Table.from_pylist(records)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def test_fiqa_fingpt_split_concatenates_then_splits_with_seed_42():
    scores = [-0.5, -0.1, 0.0, 0.0999, 0.1, 0.7]  # -0.1 is neutral, 0.1 positive (FinGPT's make_label)
    records = [{"sentence": f"s{i}", "sentiment_score": scores[i % 6], "format": ("post", "headline")[i % 2]}
               for i in range(1213)]  # fmt: skip
    parts = [arrow_stream(records[:961]), arrow_stream(records[961:1063]), arrow_stream(records[1063:])]
    train, test = (rows(b) for b in fiqa_fingpt_split(parts))
    assert (len(train), len(test)) == (938, 275)
    labels = ["negative", "neutral", "neutral", "neutral", "positive", "positive"]
    i = int(np.random.default_rng(42).permutation(1213)[0])  # the first test row
    assert test[0] == {"context": prompt(TWEET if i % 2 == 0 else NEWS, f"s{i}"), "target": labels[i % 6]}
    assert convert("fiqa_fingpt_test", parts) == fiqa_fingpt_split(parts)[1]
    with pytest.raises(ConversionError, match="expected 1213 rows"):
        fiqa_fingpt_split(parts[:2])


def test_unknown_conversion_names_the_known_ones():
    with pytest.raises(ConversionError, match="unknown conversion 'fbp_train'; known: fpb_train"):
        convert("fbp_train", [b""])


def test_ner_cls_asks_about_the_last_entity_with_the_notebooks_option_order():
    conll = (
        "-DOCSTART- -X- O O\n\n"
        "Loan NN - O\nto TO - O\nEvergreen NNP - I-ORG\nSolar NNP - I-ORG\n"
        "in IN - O\nParis NNP - I-LOC\n. . - O\n\n"
        "No DT - O\nentity NN - O\n\n"
    )
    out = rows(convert("ner_cls_train", [conll.encode()]))
    assert len(out) == 2 * 17  # two distinct entities, 17 templates each, all about the last one
    assert {r["target"] for r in out} == {"location"}
    assert out[0]["context"].startswith(
        "Instruction: What is the entity type of 'Paris' in the input sentence."
    )
    assert out[0]["context"].endswith("\nInput: Loan to Evergreen Solar in Paris .\nAnswer: ")
    rng = random.Random(0)
    for _ in range(354_065):
        rng.getrandbits(32)
    for row in out:
        options = ["location", "organization", "person"]
        rng.shuffle(options)
        assert f"\nOptions: {', '.join(options)}\n" in row["context"]
