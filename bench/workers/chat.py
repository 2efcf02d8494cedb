"""prompt_format chat on the worker side: a row's prompt rendered through the tokenizer's chat template
exactly as lm-eval renders it at evaluation time (evaluate(..., apply_chat_template=True)), and encoded
as lm-eval's HFLM encodes such a context, so training and evaluation see the same tokens.
"""

from __future__ import annotations

from bench.models.chat_templates import missing_template_reason


class ChatTemplate:
    """The tokenizer's chat template exactly as lm-eval applies it at evaluation time: lm-eval's own
    HFLM.apply_chat_template, run on the two attributes it reads (the tokenizer and its extra template
    arguments, none in bench), so that training needs no model object and cannot render differently."""

    def __init__(self, tokenizer):
        self.tokenizer, self.chat_template_args = tokenizer, {}

    def __call__(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        from lm_eval.models.huggingface import HFLM

        return HFLM.apply_chat_template(self, chat_history, add_generation_prompt)


def chat_template_for(cell, tokenizer) -> ChatTemplate | None:
    """The cell's chat renderer (prompt_format chat), None for raw; a tokenizer without a template is
    refused here, before the model loads (a hub id's tokenizer cannot be read any earlier)."""
    if cell.prompt_format != "chat":
        return None
    if not tokenizer.chat_template:
        raise ValueError(missing_template_reason(cell.model))
    return ChatTemplate(tokenizer)


def prompt_of(task, doc: dict, chat: ChatTemplate | None) -> str:
    """A row's training prompt: raw, its context as it is (doc_to_text); chat, the context lm-eval's
    evaluator builds for it with apply_chat_template (zero-shot, fewshot_as_multiturn, as
    bench.workers.evaluate runs it), from lm-eval's own fewshot_context."""
    if chat is None:
        return task.doc_to_text(doc)
    return task.fewshot_context(
        doc, num_fewshot=0, apply_chat_template=True, fewshot_as_multiturn=True, chat_template=chat,
        gen_prefix=task.doc_to_prefix(doc),
    )  # fmt: skip


def adds_special_tokens(tokenizer, prompt: str) -> bool:
    """Whether encoding the prompt adds the tokenizer's special tokens: not when the prompt already
    starts with the BOS text (a chat template's own), as lm-eval's HFLM.tok_batch_encode decides, so
    that no prompt gets BOS twice."""
    from lm_eval.models.utils import has_bos_prefix

    return not has_bos_prefix(prompt, getattr(tokenizer, "bos_token", None))
