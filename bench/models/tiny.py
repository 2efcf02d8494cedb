"""The `tiny` model: a random-init Llama with a byte-level BPE tokenizer trained on task text, and a
plain chat template (bench.models.chat_templates) so that `prompt_format: chat` runs in seconds too.

Built once per (config, text) into a cache folder, under a file lock so that parallel worker
ranks never race: the first builds into a temporary folder and renames it into place.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from bench.core.cell import ModelSpec
from bench.core.data import load_rows, task_files
from bench.core.tasks import PAPER_ORDER
from bench.models.chat_templates import TINY_CHAT_TEMPLATE
from bench.models.model_cache import build_once
from bench.models.sources import TINY_CONFIG
from bench.models.sources import TINY_VOCAB_SIZE as VOCAB_SIZE

ROWS_PER_FILE = 2000
SPECIAL_TOKENS = ("<|endoftext|>", "<pad>")


def corpus(data_dir: Path) -> list[str]:
    """The first rows of the eight FinLoRA tasks' files present: enough text for a stable small vocabulary.

    A fixed list, not every task known: a user's task (or a new variant) must not change the tiny model
    under cells whose keys do not change with it."""
    texts = []
    for task in sorted(PAPER_ORDER):
        for path in task_files(task, data_dir):
            if path is not None:
                rows = load_rows(path)[:ROWS_PER_FILE]
                texts.extend(r["context"] + r["target"] for r in rows)
    return texts


def resolve(spec: ModelSpec, data_dir: Path) -> Path:
    return tiny_model_dir(data_dir)


def tiny_model_dir(data_dir: Path) -> Path:
    texts = corpus(data_dir)
    # The chat template is part of what is built (a folder built before it existed lacks it).
    recipe = [TINY_CONFIG, VOCAB_SIZE, texts, TINY_CHAT_TEMPLATE]
    digest = hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:12]
    return build_once(f"tiny-{digest}", lambda out: build_tiny(out, texts))


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=SPECIAL_TOKENS[0],
        bos_token=SPECIAL_TOKENS[0],
        pad_token=SPECIAL_TOKENS[1],
        padding_side="left",
    )


def build_tiny(out_dir: Path, texts: list[str], seed: int = 0) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(texts)
    # Only the tokenizer config gains it: tokenization, the vocabulary and the weights stay as they were.
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **TINY_CONFIG,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
