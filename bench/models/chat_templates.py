"""Whether a model's tokenizer has a chat template, known before anything loads (`prompt_format: chat`).

`chat` renders every prompt through the tokenizer's chat template, as lm-eval's --apply_chat_template
does; a tokenizer without one has nothing to render with (lm-eval would fail on the first prompt, after
the model loaded). So matrix validation asks here first: the tiny and packaged models' facts are known,
a local directory's tokenizer files are read. A hub id cannot be read without the hub: the workers check
it right after the tokenizer loads and fail the cell with the same reason (bench.workers.examples).

Pure (no torch): matrix validation imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.core.cell import ModelSpec
from bench.models.sources import kind_of, local_dir

# The `tiny` tokenizer's chat template (bench.models.tiny): a plain-text turn format that starts with
# the tokenizer's BOS text as Llama 3's template does, so the no-double-BOS rule is exercised too. Its
# role markers are ordinary text to the tokenizer: the vocabulary (so every raw cell) stays the same.
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# Packaged models whose converted tokenizer carries the checkpoint's own template (from the GGUF).
PACKAGED_WITH_TEMPLATE = frozenset({"smollm2-135m-instruct"})
TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
FIX = "use prompt_format: raw for this model, or a model whose tokenizer ships a chat template"


def has_template_files(folder: Path) -> bool:
    """What transformers' tokenizer loading reads a template from: tokenizer_config.json's
    `chat_template`, a chat_template.jinja/.json file, or an additional_chat_templates folder."""
    config = folder / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text(encoding="utf-8")).get("chat_template"):
        return True
    if any((folder / name).is_file() for name in TEMPLATE_FILES):
        return True
    extra = folder / "additional_chat_templates"
    return extra.is_dir() and any(extra.iterdir())


def chat_refusal(spec: ModelSpec, base: Path) -> str | None:
    """Why `spec` cannot take prompt_format chat (names the model and the fix), or None: it can, or it
    is a hub id, whose tokenizer only the worker can read (it checks at load time)."""
    kind = kind_of(spec).kind
    who = f"model {spec.name!r} (source {spec.source!r})"
    if kind == "tiny":
        return None
    if kind == "packaged":
        if spec.source in PACKAGED_WITH_TEMPLATE:
            return None
        return f"{who}: its packaged tokenizer has no chat template; {FIX}"
    if kind == "random":
        return (
            f"{who}: random weights come with bench's task-text tokenizer, which has no chat template; " + FIX
        )
    if kind == "local":
        folder = local_dir(spec.source, base)
        if has_template_files(folder):
            return None
        config = folder / "tokenizer_config.json"
        return f"{who}: its tokenizer has no chat template (none in {config}, no chat_template.jinja); {FIX}"
    return None  # hub: checked by the worker once the tokenizer is loaded


def missing_template_reason(spec: ModelSpec) -> str:
    """The worker's refusal, once a loaded tokenizer turns out to have no template (hub ids)."""
    return f"model {spec.name!r} (source {spec.source!r}): its tokenizer has no chat template; {FIX}"
