"""The report header's line on evaluation protocols: which ran, for which cells, and what each fixes.
Pure (no torch)."""

from __future__ import annotations

from collections import Counter

from bench.core import protocols
from bench.report.likeness import EOS, TEXTS
from bench.report.model import CellState


def describe(name: str) -> str:
    p = protocols.get(name)
    budgets = p.max_new_tokens
    tokens = (f"{budgets['label']} (tasks may set their own)" if len(set(budgets.values())) == 1
              else f"labels {budgets['label']}, extraction {budgets['extraction']}")  # fmt: skip
    decoding = p.decoding.describe("recorded per cell") if p.decoding.sample else p.decoding.describe()
    return (
        f"{name}: {decoding}; new tokens {tokens}; {EOS[p.eos]}; scores the {TEXTS[p.scored_text]} "
        f"with {p.scorer}; {p.source}"
    )


def protocol_facts(states: list[CellState]) -> str:
    used = Counter(st.cell.eval.protocol for st in states)
    return " | ".join(f"{describe(name)} ({n} cell{'s' * (n > 1)})" for name, n in used.items())
