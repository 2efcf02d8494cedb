"""FinGPT's NER entity-type classification rows (`fingpt-ner-cls`), rebuilt from the SEC-filings CoNLL files.

A reimplementation of `get_ner_dataset_4` in FinGPT's fingpt/FinGPT_Benchmark/data/prepare_data.ipynb:
for each sentence with a PER/ORG/LOC entity, 17 templated questions per distinct entity, each with the
three options in a `random.shuffle`d order. That order is Python's `random` as the notebook left it:
seeded with 0, then 354,065 32-bit outputs drawn by the headline-cls cell that ran before, then FIN5
(train), then FIN3 (test). The notebook's quirk is kept: every row of a sentence asks about the last
entity found in it (and gives that entity's type). The FIN3 side reproduces FinLoRA's ner_test.jsonl
byte for byte, the FIN5 side the data README's ner/train.jsonl.
"""

from __future__ import annotations

import io
import json
import random

ENTITY_TYPES = {"PER": "person", "ORG": "organization", "LOC": "location"}
SEED, DRAWN_BEFORE = 0, 354_065
TEMPLATES = (
    "What is the entity type of '{entity}' in the input sentence.",
    "With the input text as context, identify the entity type of '{entity}'.",
    "Using the input sentence as a reference, analyze and specify the entity type of '{entity}'.",
    "In the context of the input sentence, examine and categorize the entity type of '{entity}'.",
    "Utilize the input text as context to explore and ascertain the entity type of '{entity}'.",
    "Leverage the input sentence to evaluate and define the entity type for '{entity}'.",
    "Considering the input sentence as context, inspect and classify the entity type of '{entity}'.",
    "With the input sentence as a backdrop, scrutinize and determine the entity type of '{entity}'.",
    "Interpreting the input sentence as context, specify the entity type for '{entity}'.",
    "Assessing the input sentence as context, label the entity type of '{entity}'.",
    "In the input sentence, determine the entity type for '{entity}'.",
    "Within the input text, identify the entity type of '{entity}'.",
    "Analyze the input sentence to find the entity type of '{entity}'.",
    "Check the input sentence for the entity type associated with '{entity}'.",
    "Explore the input sentence to ascertain the entity type of '{entity}'.",
    "Examine the input text to classify the entity type of '{entity}'.",
    "Scrutinize the input sentence to define the entity type of '{entity}'.",
)


def conll_sentences(raw: bytes) -> list[list[tuple[str, str]]]:
    """(token, label) per line (first and last column), sentences split by blank lines."""
    sentences, sentence = [], []
    for line in io.StringIO(raw.decode("utf-8"), newline=None):
        if line.strip():
            parts = line.strip().split()
            sentence.append((parts[0], parts[-1]))
        elif sentence:
            sentences.append(sentence)
            sentence = []
    return sentences


def entities(sentence: list[tuple[str, str]]) -> tuple[int, str, str]:
    """(distinct entities, the last entity, its type), grouped as the notebook groups tokens."""
    is_entity = [label != "O" and not label.endswith("MISC") for _, label in sentence]
    run: list[tuple[str, str]] = []
    seen: set[str] = set()
    entity = kind = ""
    for i, token in enumerate(sentence):
        if run and (not is_entity[i] or run[-1][1] != token[1] or i + 1 == len(sentence)):
            entity, kind = " ".join(t for t, _ in run), ENTITY_TYPES[run[-1][1].split("-")[-1]]
            seen.add(entity)
            run = [token] if is_entity[i] else []
        elif is_entity[i]:
            run.append(token)
    return len(seen), entity, kind


def ner_cls_rows(sentences: list[list[tuple[str, str]]], rng: random.Random) -> list[dict]:
    rows = []
    for sentence in sentences:
        count, entity, kind = entities(sentence)
        text = " ".join(t for t, _ in sentence)
        for _ in range(count):
            for template in TEMPLATES:
                options = ["location", "organization", "person"]
                rng.shuffle(options)
                question = f"{template.format(entity=entity)}\nOptions: {', '.join(options)}"
                rows.append({"context": f"Instruction: {question}\nInput: {text}\nAnswer: ", "target": kind})
    return rows


def ner_cls_train(inputs: list[bytes]) -> bytes:
    """ner/train.jsonl from SEC-filings FIN5.txt (CoNLL), with the notebook's random option order."""
    rng = random.Random(SEED)
    for _ in range(DRAWN_BEFORE):
        rng.getrandbits(32)
    rows = ner_cls_rows(conll_sentences(inputs[0]), rng)
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
