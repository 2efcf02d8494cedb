"""Evaluation protocols: how a cell's test outputs are decoded, which text of them is scored, by
which scorer, on which test split, as data. Pure (no torch).

A matrix names one with `eval.protocol` (or the `protocol` axis). Three exist:

- `bench` (the default): greedy decoding, 10 new tokens for label tasks and 30 for XBRL, generation
  stops at every end-of-sequence id the model knows, the first non-empty line is scored.
- `finlora-2024`: the evaluation code behind the quantized paper (arXiv 2412.11378; FinLoRA
  c1003e8 `benchmarks/*.py`). Its `model.generate` passes no `do_sample`, so Llama 3.1 Instruct's
  generation_config sampled (T 0.6, top-p 0.9; top-k stays transformers' 50). The protocol fixes those
  values for every model, so that a protocol means one decoding whatever model runs under it; the
  draws are seeded (the record keeps the seed). 20 new tokens for every task, one eos id
  (`tokenizer.eos_token_id`), and the whole continuation up to a repeated "Answer: " is scored
  (`decoded.split("Answer: ")[1]`; XBRL `split("\\nAnswer:")[1].strip()`). FiQA SA on the FinGPT split
  (275 rows) that its interim numbers used.
- `finlora-2025`: the benchmark paper's code (arXiv 2505.19819; Open-Finance-Lab/FinLoRA
  `test/test_dataset.py`, `test/inference.py`): temperature 1e-5, greedy in effect, so greedy here;
  10 new tokens for label tasks and 20 for XBRL, one eos id, the text after the last "Answer:"
  stripped, the `finlora2025` scorer, batch 1.

The same protocols run through stock `lm_eval --include_path tasks`: task `<task>_finlora2024` or
`<task>_finlora2025` carries the protocol's generation settings, filter and metrics (tasks/).
Stock lm-eval stops at every eos id of the model's generation_config; only bench's runner can
narrow that to the tokenizer's one (bench.workers.lm).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.core import tasks as task_registry

DEFAULT_PROTOCOL = "bench"
DEFAULT_SEED = 1234  # lm-eval's default torch seed (stock runs seed torch with it once, bench per cell)
SCORED_TEXTS = ("first_line", "after_answer", "after_last_answer")
EOS_POLICIES = ("all", "tokenizer")


@dataclass(frozen=True)
class Decoding:
    sample: bool
    temperature: float | None = None
    top_p: float | None = None
    note: str = ""  # what the source did, where it differs in form (2025's T 1e-5)

    def gen_kwargs(self) -> dict:
        if not self.sample:
            return {"do_sample": False, "temperature": 0.0}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p}

    def describe(self, seed: int | None = None) -> str:
        if not self.sample:
            return "greedy" + (f" ({self.note})" if self.note else "")
        return f"sampled (T {self.temperature}, top-p {self.top_p}, seed {seed})"


@dataclass(frozen=True)
class Protocol:
    name: str
    source: str  # whose code it reproduces, with the file
    decoding: Decoding
    max_new_tokens: dict[str, int]  # answer type (label | extraction) -> new tokens, where a task sets none
    eos: str  # all: every eos id the model knows; tokenizer: tokenizer.eos_token_id only
    scored_text: str  # first_line | after_answer | after_last_answer
    scorer: str
    task_suffix: str  # lm-eval task name = task + suffix
    batch_sizes: dict[str, int] = field(default_factory=dict)  # "default", "70b", "xbrl" -> batch
    test_variants: dict[str, str] = field(default_factory=dict)  # catalog task -> variant evaluated
    eval_bits: int | None = None  # the inference precision behind the source's numbers
    seeded: bool = False  # whether the decoding draws random numbers (the record keeps the seed)
    # The lm-eval base file (tasks/lm-eval/_*.yaml) a task's generated YAML includes, per answer type.
    lm_eval_base: dict[str, str] = field(default_factory=dict)

    def max_new(self, task: str) -> int:
        return self.budget(task_registry.get(task))

    def budget(self, spec) -> int:
        """The task file's new-token budget for this protocol, else the protocol's for its answer type."""
        return spec.max_new_tokens.get(self.name, self.max_new_tokens[spec.answer])

    def batch_size(self, model_name: str, training_set: str) -> int | None:
        """The source's evaluation batch, for cells whose matrix does not set one."""
        if not self.batch_sizes:
            return None
        if "xbrl" in training_set and "xbrl" in self.batch_sizes:
            return self.batch_sizes["xbrl"]
        if "70b" in model_name.lower() and "70b" in self.batch_sizes:
            return self.batch_sizes["70b"]
        return self.batch_sizes["default"]

    def test_task(self, task: str) -> str:
        """The data task a catalog eval task is scored on under this protocol."""
        return self.test_variants.get(task, task)

    def lm_eval_task(self, task: str) -> str:
        return self.test_task(task) + self.task_suffix

    @property
    def stops_early(self) -> bool:
        # Only a first-line answer is finished before max_new_tokens; the other texts run on.
        return self.scored_text == "first_line"


PROTOCOLS: dict[str, Protocol] = {
    p.name: p
    for p in (
        Protocol(
            name="bench",
            source="bench's default",
            decoding=Decoding(sample=False),
            max_new_tokens={"label": 10, "extraction": 30},
            eos="all",
            scored_text="first_line",
            scorer="finlora",
            task_suffix="",
            lm_eval_base={"label": "_label.yaml", "extraction": "_xbrl.yaml"},
        ),
        Protocol(
            name="finlora-2024",
            source="FinLoRA c1003e8 benchmarks/*.py (arXiv 2412.11378)",
            decoding=Decoding(sample=True, temperature=0.6, top_p=0.9),
            max_new_tokens={"label": 20, "extraction": 20},
            eos="tokenizer",
            scored_text="after_answer",
            scorer="finlora",
            task_suffix="_finlora2024",
            batch_sizes={"default": 128, "70b": 8, "xbrl": 2},  # test_all.py get_batch_size, xbrl.py:34
            test_variants={"fiqa_sa": "fiqa_sa_fingpt"},  # fiqa.py:61-64: the FinGPT split
            eval_bits=16,  # test_all.py: quantization_config commented out (bf16)
            seeded=True,
            lm_eval_base={"label": "_finlora2024.yaml", "extraction": "_finlora2024.yaml"},
        ),
        Protocol(
            name="finlora-2025",
            source="Open-Finance-Lab/FinLoRA test/test_dataset.py + test/inference.py (arXiv 2505.19819)",
            decoding=Decoding(sample=False, note="FinLoRA: temperature 1e-5, greedy in effect"),
            max_new_tokens={"label": 10, "extraction": 20},
            eos="tokenizer",
            scored_text="after_last_answer",
            scorer="finlora2025",
            task_suffix="_finlora2025",
            batch_sizes={"default": 1},  # run_all_adapters.sh
            lm_eval_base={"label": "_finlora2025_label.yaml", "extraction": "_finlora2025_xbrl.yaml"},
        ),
    )
}


def get(name: str) -> Protocol:
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; known: {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def scored_text(kind: str, continuation: str, task: str) -> str:
    """The part of a generation (the text after the prompt) that the protocol scores.

    after_answer is FinLoRA 2024's `(prompt + continuation).split("Answer: ")[1]`: the prompt's only
    "Answer: " is its end, so that is the continuation up to any "Answer: " it writes itself; for XBRL
    (prompts ending in "\\nAnswer:") the 2024 code split on "\\nAnswer:" and stripped. after_last_answer
    is 2025's `split("Answer:")[-1].strip()`: the text after the last "Answer:", prompt or continuation.
    """
    from bench.core.scoring import answer_text

    if kind == "first_line":
        return answer_text(continuation)
    if kind == "after_answer":
        if task_registry.get(task).answer == "extraction":  # FinLoRA 2024's XBRL split
            return continuation.split("\nAnswer:")[0].strip()
        return continuation.split("Answer: ")[0]
    if kind == "after_last_answer":
        return continuation.split("Answer:")[-1].strip()
    raise ValueError(f"unknown scored text {kind!r}; known: {', '.join(SCORED_TEXTS)}")
