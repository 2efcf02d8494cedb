"""Plots for the HTML report, as inline SVG strings (no files, no network when the page is viewed).

matplotlib's object API (Figure, no pyplot) so that nothing global changes, with a fixed SVG hash
salt and no date, so the same report renders the same bytes. Pure (no torch).
"""

from __future__ import annotations

import functools
import io
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # before anything can pick an interactive backend

from matplotlib import rc_context  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from bench.core.metrics import METRICS  # noqa: E402
from bench.report.model import task_order  # noqa: E402

STYLE = {"svg.hashsalt": "bench", "svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3}  # fmt: skip
# (key, axis label) per x quantity, for GPU runs and for CPU runs: never mixed in one panel, since a
# CPU's peak RSS and a GPU's allocated memory are different measures.
AXES = {
    ("memory", "gpu"): ("gpu_mem_sum_gb", "peak GPU memory, sum over GPUs (GB)"),
    ("memory", "cpu"): ("peak_rss_gb", "peak RSS (GB), CPU runs"),
    ("time", "gpu"): ("gpu_hours", "GPU-hours"),
    ("time", "cpu"): ("train_s", "train wall time (s), CPU runs"),
}


def styled(func):
    """Run a plotting function inside the report's style: rcParams apply when artists are made."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


def to_svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog: the SVG goes inline into HTML


def _grid(n: int, width: float = 4.4, height: float = 3.3) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = -(-n // cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def pareto(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Points no other point beats on both axes (lower x, higher y), in order of x."""
    front, best = [], float("-inf")
    for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
        if y > best:
            front.append((x, y))
            best = y
    return front


@styled
def tradeoff_svgs(long: tuple[dict, ...], scorer: str) -> list[tuple[str, str]]:
    """Accuracy against peak memory and against training cost: one panel per task, GPU and CPU apart."""
    scored = [r for r in long if r.get("scorer") == scorer and r.get("accuracy") is not None]
    colours = _colours(r["config"] for r in scored)
    out = []
    for (_, kind), (key, label) in AXES.items():
        trained = [
            r for r in scored if r["bits"] is not None and r["status"] == "ok" and r.get(key) is not None
        ]
        trained = [r for r in trained if (r.get("device") == "cpu") == (kind == "cpu")]
        tasks = sorted({r["task"] for r in trained}, key=lambda t: (task_order(t), t))
        if not tasks:
            continue
        fig, axes = _grid(len(tasks))
        for ax, task in zip(axes, tasks, strict=True):
            base = [r for r in scored if r["task"] == task and r["bits"] is None]
            _tradeoff_panel(ax, task, [r for r in trained if r["task"] == task], base, (key, label), colours)
        out.append((f"Accuracy ({scorer} scorer) vs {label}", to_svg(fig)))
    return out


def _colours(labels) -> dict[str, str]:
    palette = matplotlib.colormaps["tab10"].colors
    return {label: matplotlib.colors.to_hex(palette[i % 10]) for i, label in enumerate(dict.fromkeys(labels))}


def _tradeoff_panel(ax, task: str, points: list[dict], base: list[dict], axis: tuple, colours: dict) -> None:
    """Points labelled in place (no legend to hide them); Pareto points are circles, the rest squares."""
    key, label = axis
    xy = [(p[key], 100 * p["accuracy"]) for p in points]
    front = set(pareto(xy))
    for p, (x, y) in zip(points, xy, strict=True):
        on, colour = (x, y) in front, colours[p["config"]]
        edge, width, marker = ("black", 1.2, "o") if on else (colour, 0.5, "s")
        ax.scatter([x], [y], s=50, color=colour, edgecolors=edge, linewidths=width, zorder=3, marker=marker)
        ax.annotate(p["config"], (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    line = sorted(front)
    ax.step([x for x, _ in line], [y for _, y in line], where="post", color="black", lw=1, ls="--", zorder=2)
    # Base models of the models plotted here, as reference lines: they cost no training.
    models = {p["model"] for p in points}
    for b in {r["config"]: r for r in base if r["model"] in models}.values():
        y = 100 * b["accuracy"]
        ax.axhline(y, color=colours[b["config"]], lw=1, ls=":")
        ax.annotate(b["config"], (0, y), xycoords=("axes fraction", "data"), xytext=(3, 3),
                    textcoords="offset points", fontsize=7, color="dimgray")  # fmt: skip
    ax.margins(x=0.25, y=0.15)
    ax.set_title(task)
    ax.set_xlabel(f"{label} — {METRICS[key].direction}")
    ax.set_ylabel(f"accuracy (%) — {METRICS['accuracy'].direction}")


@styled
def loss_svg(curves) -> str | None:
    """Training loss against optimizer step, one panel per training set, one line per configuration."""
    by_set: dict[str, list] = defaultdict(list)
    for curve in curves:
        if curve.points:
            by_set[curve.training_set].append(curve)
    if not by_set:
        return None
    fig, axes = _grid(len(by_set))
    for ax, (name, group) in zip(axes, sorted(by_set.items()), strict=True):
        for curve in group:
            ax.plot([s for s, _ in curve.points], [v for _, v in curve.points], lw=1.3, label=curve.label)
        ax.set_title(f"training set: {name}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"train loss — {METRICS['train_loss_last'].direction}")
        ax.legend(fontsize=7)
    return to_svg(fig)
