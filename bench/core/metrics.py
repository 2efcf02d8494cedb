"""The metric registry: every quantity bench records and shows, with its label, unit, format and
direction, read by the report's tables, best-marking and plots and by `bench check`.

A new report column is one entry here (with `columns=("resources",)`) plus the worker that measures
it under the same key. Pure (no torch).
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.core.records import Phase


def _bytes(value: float) -> str:
    # Decimal units, as the paper's GB figures are.
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def _count(value: float) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _flop_rate(value: float) -> str:
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value / 1e6:.2f} MFLOP/s"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


FORMATS = {
    "pct": lambda v: f"{100 * v:.1f}",
    "pct2": lambda v: f"{v:.2f}",  # already in percent (published numbers, deltas in points)
    "delta_pp": lambda v: f"{v:+.2f}",
    "f1": lambda v: f"{v:.3f}",
    "delta_f1": lambda v: f"{v:+.3f}",
    "gb": lambda v: f"{v:.2f}",
    "hours": lambda v: f"{v:.3f}",
    "rate": lambda v: f"{v:,.1f}",
    "ratio": lambda v: f"{v:.2f}x",
    "seconds": lambda v: f"{v:.3f}",
    "bytes": _bytes,
    "count": _count,
    "duration": _duration,
    "flop_rate": _flop_rate,
    "int": lambda v: f"{int(v)}",
}


@dataclass(frozen=True)
class Metric:
    """How one quantity is shown and compared: label, unit, format name (a key of FORMATS), direction."""

    key: str
    label: str
    unit: str = ""
    fmt: str = "f1"
    lower_is_better: bool | None = None  # None: no better direction (a count, a setting)
    phase: Phase | None = None  # the record whose metrics hold it; None: scores, or derived
    columns: tuple[str, ...] = ()  # report tables that show it as a column, in registry order

    def format(self, value) -> str:
        return "n/a" if value is None else FORMATS[self.fmt](value)

    @property
    def direction(self) -> str:
        return {True: "lower is better", False: "higher is better", None: ""}[self.lower_is_better]

    def best(self, values):
        """The best of `values` in this metric's direction; None when it has none or values is empty."""
        if self.lower_is_better is None or not values:
            return None
        return min(values) if self.lower_is_better else max(values)

    def gain(self, value: float, reference: float) -> float:
        """value - reference, signed so that positive is better (a direction is required)."""
        if self.lower_is_better is None:
            raise ValueError(f"metric {self.key!r} has no better direction")
        return reference - value if self.lower_is_better else value - reference


RESOURCES = "resources"

METRICS: dict[str, Metric] = {
    m.key: m
    for m in (
        Metric("accuracy", "Acc", "%", "pct", False),
        Metric("weighted_f1", "F1", "", "f1", False),
        Metric("trainable_params", "Trainable params", "", "count", None, Phase.TRAIN, (RESOURCES,)),
        Metric("model_bytes", "Model size", "", "bytes", True, Phase.TRAIN, (RESOURCES,)),
        Metric("gpu_mem_sum_gb", "Peak GPU mem (sum)", "GB", "gb", True, Phase.TRAIN, (RESOURCES,)),
        Metric("peak_rss_gb", "Peak RSS", "GB", "gb", True, Phase.TRAIN, (RESOURCES,)),
        Metric("train_s", "Train time", "", "duration", True, Phase.TRAIN, (RESOURCES,)),
        # The time planner's forecast beside each measured time (bench.planning.timing): no direction
        Metric("predicted_train_s", "Predicted train time", "", "duration", None, Phase.TRAIN, (RESOURCES,)),
        Metric("gpu_hours", "GPU-hours", "h", "hours", True, Phase.TRAIN, (RESOURCES,)),
        Metric("adapter_bytes", "Adapter", "", "bytes", True, Phase.TRAIN, (RESOURCES,)),
        Metric("tokens_per_s", "Train throughput", "tokens/s", "rate", False, Phase.TRAIN, (RESOURCES,)),
        # Utilisation (bench.core.flops): a LoRA step's model FLOPs per real token, what the device
        # achieved, and that as a fraction of its peak at the compute dtype (the record's peak_source).
        Metric("flops_per_token", "Model FLOPs", "per token", "count", None, Phase.TRAIN, (RESOURCES,)),
        Metric(
            "achieved_flops_per_s", "Achieved", "per device", "flop_rate", False, Phase.TRAIN, (RESOURCES,)
        ),
        Metric("mfu", "MFU", "%", "pct", False, Phase.TRAIN, (RESOURCES,)),
        # Training rows cut to max_seq_len (the README's recipe for a new column, followed once).
        Metric("truncated_examples", "Truncated rows", "", "count", True, Phase.TRAIN, (RESOURCES,)),
        Metric("s_per_example", "Inference", "s/example", "seconds", True, Phase.EVAL, (RESOURCES,)),
        Metric("eval_s", "Eval time", "", "duration", True, Phase.EVAL, (RESOURCES,)),
        Metric("predicted_eval_s", "Predicted eval time", "", "duration", None, Phase.EVAL, (RESOURCES,)),
        Metric("train_loss_last", "Final train loss", "", "f1", True, Phase.TRAIN),
        Metric("predicted_gpu_gb", "Predicted", "GB/GPU", "gb"),  # a forecast: no better direction
        # bench's tokens/s over the plain HF Trainer script's, same cell and host (bench check)
        Metric("train_speed_vs_plain", "Speed vs plain Trainer", "", "ratio", False),
    )
}


def shown_in(table: str) -> tuple[Metric, ...]:
    return tuple(m for m in METRICS.values() if table in m.columns)
