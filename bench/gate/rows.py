"""One line of the gate's table: a check of one metric of one cell, and its verdict. Pure."""

from __future__ import annotations

from dataclasses import dataclass

# Verdicts that fail the gate: a regression, a missing record or cell, a cell the baseline lacks, an
# adapter no better than its references, a NaN or infinite value, a cell whose settings changed, a
# speed ratio too noisy to decide even after more repetitions (bench.gate.speed.decide).
FAILING = ("REGRESSED", "MISSING", "NEW", "NOT BETTER", "NOT FINITE", "CHANGED", "TOO NOISY")


@dataclass(frozen=True)
class Row:
    cell: str
    metric: str
    baseline: float | None
    now: float | None
    tolerance: str
    verdict: str  # ok | improved | new | one of FAILING

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING
