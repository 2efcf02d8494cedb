"""The named conversions from upstream files to FinLoRA `{context, target}` JSONL, one function each.

Each takes the bytes of a source's `inputs` (in their declared order) and returns the bytes of the data
folder's file, serialised as FinLoRA's own files are: `json.dumps(row, ensure_ascii=False) + "\\n"`. Every
one reproduces the file the data README describes byte for byte (checked by sha256 when fetched, and
against the real upstream bytes in tests/test_data_fetch.py).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable

import numpy as np

from bench.fetching.ner_cls import ner_cls_train

SENTIMENT = "Please choose an answer from {negative/neutral/positive}."
NEWS = f"What is the sentiment of this news? {SENTIMENT}"
TWEET = f"What is the sentiment of this tweet? {SENTIMENT}"
# zeroshot/twitter-financial-news-sentiment's dataset card: 0 Bearish, 1 Bullish, 2 Neutral.
TFNS_LABELS = {"0": "negative", "1": "positive", "2": "neutral"}
FPB_ROWS, FPB_TEST_ROWS, FPB_SEED = 4846, 1212, 42  # the seed of FinGPT's splits, FiQA's too
FIQA_ROWS, FIQA_TEST_ROWS = 1213, 275
PIXIU_TEMPLATES = 10  # PIXIU repeats each FiQA example under 10 instruction templates, consecutively


class ConversionError(ValueError):
    pass


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")


def _row(instruction: str, text: str, target: str) -> dict:
    return {"context": f"Instruction: {instruction}\nInput: {text}\nAnswer: ", "target": target}


def fpb_sentences(raw: bytes) -> list[tuple[str, str]]:
    """Sentences_50Agree.txt (UTF-8 with BOM, CRLF, `sentence@label`) -> (sentence, label), in order."""
    lines = [line for line in raw.decode("utf-8-sig").split("\r\n") if line]
    pairs = [tuple(line.rsplit("@", 1)) for line in lines]
    if len(pairs) != FPB_ROWS or any(len(p) != 2 for p in pairs):
        raise ConversionError(f"expected {FPB_ROWS} lines 'sentence@label', got {len(pairs)}")
    return pairs


def fpb_split(raw: bytes) -> tuple[bytes, bytes]:
    """(train, test) as FinLoRA/FinGPT split FPB: Hugging Face `train_test_split(test_size=0.25, seed=42)`,
    i.e. perm = default_rng(42).permutation(4846); test = rows perm[:1212], train = perm[1212:]."""
    pairs = fpb_sentences(raw)
    perm = np.random.default_rng(FPB_SEED).permutation(len(pairs))
    rows = [_row(NEWS, *pairs[i]) for i in perm]
    return _jsonl(rows[FPB_TEST_ROWS:]), _jsonl(rows[:FPB_TEST_ROWS])


def fpb_train(inputs: list[bytes]) -> bytes:
    """fpb/train.jsonl from pkatwate/finBERT's Sentences_50Agree.txt (the train side of fpb_split)."""
    return fpb_split(inputs[0])[0]


def fiqa_fingpt_split(inputs: list[bytes]) -> tuple[bytes, bytes]:
    """(train, test) of FiQA SA as FinGPT split it, from HF `pauri32/fiqa-2018`'s train, validation and test
    Arrow files (as `datasets.save_to_disk` wrote them): concatenated in that order, then HF
    `train_test_split(0.226, seed=42)`: perm = default_rng(42).permutation(1213), test = perm[:275];
    target from sentiment_score (< -0.1 negative, < 0.1 neutral, else positive); tweet prompt for posts."""
    import pyarrow as pa

    rows = [r for raw in inputs for r in pa.ipc.open_stream(raw).read_all().to_pylist()]
    if len(rows) != FIQA_ROWS:
        raise ConversionError(f"expected {FIQA_ROWS} rows in train + validation + test, got {len(rows)}")
    perm = np.random.default_rng(FPB_SEED).permutation(len(rows))
    out = [_row(TWEET if rows[i]["format"] == "post" else NEWS, rows[i]["sentence"],
                _fiqa_label(rows[i]["sentiment_score"])) for i in perm]  # fmt: skip
    return _jsonl(out[FIQA_TEST_ROWS:]), _jsonl(out[:FIQA_TEST_ROWS])


def _fiqa_label(score: float) -> str:
    return "negative" if score < -0.1 else "neutral" if score < 0.1 else "positive"


def fiqa_fingpt_train(inputs: list[bytes]) -> bytes:
    """fiqa_sa/train_fingpt_variant.jsonl (938 rows): the train side of fiqa_fingpt_split."""
    return fiqa_fingpt_split(inputs)[0]


def fiqa_fingpt_test(inputs: list[bytes]) -> bytes:
    """fiqa_sa/test_fingpt_variant.jsonl (275 rows): the test side of fiqa_fingpt_split."""
    return fiqa_fingpt_split(inputs)[1]


def tfns_csv(inputs: list[bytes]) -> bytes:
    """tfns/{train,test}.jsonl from a `text,label` CSV of zeroshot/twitter-financial-news-sentiment,
    labels as on its dataset card (0 negative, 1 positive, 2 neutral), tweet prompt, rows in order."""
    reader = csv.DictReader(io.StringIO(inputs[0].decode("utf-8"), newline=""))
    rows = []
    for number, record in enumerate(reader, start=2):
        if record.get("label") not in TFNS_LABELS or record.get("text") is None:
            raise ConversionError(f"CSV line {number}: needs text and a label 0, 1 or 2, got {record}")
        rows.append(_row(TWEET, record["text"], TFNS_LABELS[record["label"]]))
    return _jsonl(rows)


def pixiu_fiqasa(inputs: list[bytes]) -> bytes:
    """fiqa_sa/{train,test}.jsonl from PIXIU's data/fiqasa/{train,test}.jsonl (flare-fiqasa, conversation
    format, each example under 10 consecutive templates): one row per example; text = after `Text: `;
    target = the answer lower-cased; the tweet prompt where the template says "financial post" (FinLoRA:
    `"post" in query`), else the news prompt."""
    records = [json.loads(line) for line in inputs[0].decode("utf-8").splitlines() if line.strip()]
    if len(records) % PIXIU_TEMPLATES:
        raise ConversionError(f"{len(records)} rows is not a multiple of {PIXIU_TEMPLATES} templates")
    rows = []
    for start in range(0, len(records), PIXIU_TEMPLATES):
        query, answer = (turn["value"] for turn in records[start]["conversations"][:2])
        text = query.split("Text: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        rows.append(_row(TWEET if "financial post" in query else NEWS, text, answer.lower()))
    return _jsonl(rows)


# FinGPT's nine headline questions in its order, each with the position of the PIXIU template (Price or
# Not, Direction Up, Down, Constant, PastPrice, FuturePrice, PastNews, FutureNews, Asset Comparision)
# whose answer it takes. As in FinGPT's code, "talk about price?" takes Direction Constant's label.
_ABOUT = "Does the news headline talk about {}? Please choose an answer from {{Yes/No}}."
HEADLINE_QUESTIONS = (
    (3, _ABOUT.format("price")),
    (1, _ABOUT.format("price going up")),
    (3, _ABOUT.format("price staying constant")),
    (2, _ABOUT.format("price going down")),
    (4, _ABOUT.format("price in the past")),
    (5, _ABOUT.format("price in the future")),
    (6, _ABOUT.format("a general event (apart from prices) in the past")),
    (7, _ABOUT.format("a general event (apart from prices) in the future")),
    (8, "Does the news headline compare gold with any other asset? Please choose an answer from {Yes/No}."),
)


def pixiu_headlines(inputs: list[bytes]) -> bytes:
    """headline/train_partial_rows71901-82160.jsonl from PIXIU's data/headlines/valid.jsonl (flare-headlines,
    9 consecutive labelled templates per headline): FinGPT's nine questions per headline, in its order."""
    records = [json.loads(line) for line in inputs[0].decode("utf-8").splitlines() if line.strip()]
    width = len(HEADLINE_QUESTIONS)
    if len(records) % width:
        raise ConversionError(f"{len(records)} rows is not a multiple of {width} questions per headline")
    rows = []
    for start in range(0, len(records), width):
        turns = [r["conversations"] for r in records[start : start + width]]
        text = turns[0][0]["value"].split("\nText: ", 1)[1].rsplit("\nAnswer:", 1)[0]
        rows += [_row(question, text, turns[i][1]["value"]) for i, question in HEADLINE_QUESTIONS]
    return _jsonl(rows)


def drop_doc_path(inputs: list[bytes]) -> bytes:
    """xbrl_{tags,value}/test.jsonl from FinLoRA's XBRL files: each row's `doc_path` key dropped,
    `context` and `target` unchanged (prompt quirks kept)."""
    rows = (json.loads(line) for line in inputs[0].decode("utf-8").splitlines() if line.strip())
    return _jsonl({"context": r["context"], "target": r["target"]} for r in rows)


CONVERSIONS: dict[str, Callable[[list[bytes]], bytes]] = {
    f.__name__: f
    for f in (
        fpb_train,
        fiqa_fingpt_train,
        fiqa_fingpt_test,
        tfns_csv,
        pixiu_fiqasa,
        pixiu_headlines,
        drop_doc_path,
        ner_cls_train,
    )
}


def convert(name: str, inputs: list[bytes]) -> bytes:
    if name not in CONVERSIONS:
        raise ConversionError(f"unknown conversion {name!r}; known: {', '.join(CONVERSIONS)}")
    return CONVERSIONS[name](inputs)
