"""bench's lm-eval model: HFLM whose generation also stops once every answer in the batch is complete.

The tasks score only the first non-empty line of a generation (bench.core.scoring.answer_text), and run
without a newline stop because weak models open with "\\n". So a batch may stop as soon as each of
its sequences has ended such a line: the scores are the ones a full-length generation gives, with
fewer decode steps for models that keep talking after their answer (base rows, XBRL's 30 tokens).
"""

from __future__ import annotations

import torch
import transformers
from lm_eval.models.huggingface import HFLM
from lm_eval.models.utils_hf import stop_sequences_criteria

from bench.core.scoring import answer_complete
from bench.workers.prefix import SpanCaches, shared_context, with_span_first
from bench.workers.protocol import event


class AnswersComplete(transformers.StoppingCriteria):
    """True once every sequence has either ended (an end-of-sequence id) or holds a finished first
    non-empty line. transformers ORs the criteria over the whole batch, so a sequence that ended on
    EOS must count as done here too, or a batch mixing both kinds would never stop early."""

    def __init__(self, tokenizer, prompt_length: int, batch_size: int, eos_ids: list[int]):
        self.tokenizer, self.prompt_length = tokenizer, prompt_length
        self.eos = torch.tensor(sorted(set(eos_ids)), dtype=torch.long)
        self.done = [False] * batch_size

    def __call__(self, input_ids, scores, **kwargs) -> bool:
        pending = [i for i, done in enumerate(self.done) if not done]
        new = input_ids[pending, self.prompt_length :]
        ended = torch.isin(new, self.eos.to(new.device)).any(dim=1).tolist()
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        for i, stop, text in zip(pending, ended, texts, strict=True):
            self.done[i] = stop or answer_complete(text)
        return all(self.done)


class BenchLM(HFLM):
    """eos_policy "all" stops at every eos id the model knows; "tokenizer" at tokenizer.eos_token_id
    only, as FinLoRA's generate(eos_token_id=tokenizer.eos_token_id) did (bench.core.protocols).
    stop_early adds AnswersComplete: right only where the first line is what gets scored."""

    def __init__(self, *args, eos_policy: str = "all", stop_early: bool = True, cell_id: str = "",
                 prefix_reuse: bool = True, **kwargs):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.eos_policy, self.stop_early, self.prefix_reuse = eos_policy, stop_early, prefix_reuse
        self.cell_id, self.rows_total, self.rows_done = cell_id, 0, 0
        self.shared_spans: list[int] = []  # per generate() batch that shared a span: its tokens
        self.span_caches = SpanCaches()  # the spans prefilled so far, for the batches after them

    def generate_until(self, requests, disable_tqdm: bool = False):
        # lm-eval hands over every generation request of the cell at once: that is the bar's total.
        # Its own tqdm bar is off: it would only reach the worker's log (a pipe), as \r-joined noise;
        # the events below feed the console's bar instead.
        self.rows_total, self.rows_done = len(requests), 0
        event(self.cell_id, "eval", 0, self.rows_total)
        return super().generate_until(requests, disable_tqdm=True)

    def _model_generate(self, context, max_length: int, stop: list[str], **generation_kwargs):
        # HFLM's own settings (greedy when temperature is 0, its stop sequences), plus AnswersComplete.
        if generation_kwargs.get("temperature", 0.0) == 0.0 and generation_kwargs.get("do_sample") is None:
            generation_kwargs["do_sample"] = False
        if generation_kwargs.get("do_sample") is False:
            generation_kwargs.pop("temperature", None)
        if self.eos_policy == "tokenizer":
            generation_kwargs["eos_token_id"] = self.tokenizer.eos_token_id
        criteria = stop_sequences_criteria(self.tokenizer, stop, context.shape[1], context.shape[0])
        if self.stop_early:
            criteria.append(
                AnswersComplete(self.tokenizer, context.shape[1], context.shape[0], self._eos_ids())
            )
        context, generation_kwargs = self._span_once(context, generation_kwargs)
        generated = self.model.generate(
            input_ids=context,
            max_length=max_length,
            stopping_criteria=criteria,
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
            **generation_kwargs,
        )
        self.rows_done += context.shape[0]
        event(self.cell_id, "eval", min(self.rows_done, self.rows_total), self.rows_total)
        return generated

    def _span_once(self, context, generation_kwargs: dict) -> tuple[torch.Tensor, dict]:
        """With eval.prefix_reuse, the span every row of the batch begins with (the task's instruction)
        is prefilled once per cell and its keys/values handed to generate() for every row of every batch
        that begins with it (bench.workers.prefix.SpanCaches); the rows come back as [span, padding,
        rest], the width lm-eval cuts the continuation at kept."""
        mask = generation_kwargs.get("attention_mask")
        n = shared_context(context, mask) if self.prefix_reuse and mask is not None else 0
        if not n:
            return context, generation_kwargs
        pad = int((mask[0] == 0).long().cumprod(dim=0).sum())  # row 0's left padding
        n = self.span_caches.span_for(context[0, pad : pad + n].tolist())
        ids, attended = with_span_first(context, mask, n)
        keyword, cache = self.span_caches.cache_for(self.model, ids[:1, :n], ids.shape[0])
        self.shared_spans.append(n)
        return ids, {**generation_kwargs, "attention_mask": attended, keyword: cache}

    def _eos_ids(self) -> list[int]:
        if self.eos_policy == "tokenizer":
            return [self.tokenizer.eos_token_id]
        configured = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        ids = configured if isinstance(configured, list) else [configured]
        return [i for i in (*ids, self.tokenizer.eos_token_id) if i is not None]
