"""The exported adapter's (or merged model's) model card: README.md in the Hugging Face model-card format
(YAML front matter with a model-index, then prose), written from the cell and its records alone."""

from __future__ import annotations

from dataclasses import dataclass

import yaml

from bench.core.catalog import training_set
from bench.core.cell import Cell
from bench.core.records import RunRecord


@dataclass(frozen=True)
class Export:
    cell: Cell
    train: RunRecord
    evaluation: RunRecord | None
    merged: bool
    dequantized: bool  # merged onto the 16-bit weights of the checkpoint the cell quantized
    bench_version: str


def model_card(export: Export) -> str:
    cell = export.cell
    meta = {
        "base_model": cell.model.source,
        "library_name": "transformers" if export.merged else "peft",
        "tags": [
            "bench",
            "finlora",
            cell.train.method if cell.train else "lora",
            f"{cell.bits}bit",
            cell.task,
        ],
        "model-index": [{"name": cell.id, "results": _results(export)}],
    }
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(_body(export)) + "\n"


def _results(export: Export) -> list[dict]:
    out = []
    for score in _scores(export):
        metrics = [
            {"type": name, "value": round(float(score[name]), 5), "name": f"{name} ({score['scorer']})"}
            for name in ("accuracy", "weighted_f1") if score.get(name) is not None
        ]  # fmt: skip
        out.append({
            "task": {"type": "text-generation", "name": f"{score['task']} ({score['scorer']} scorer)"},
            "dataset": {"type": score["task"], "name": score["task"], "split": "test"},
            "metrics": metrics,
        })  # fmt: skip
    return out


def _scores(export: Export) -> list[dict]:
    return list(export.evaluation.scores) if export.evaluation is not None else []


def _body(export: Export) -> list[str]:
    cell, train = export.cell, export.train
    env = train.env
    what = "merged model (LoRA weights folded into the base)" if export.merged else "LoRA adapter (peft)"
    lines = [
        f"# {cell.id}",
        "",
        f"A {what} trained and evaluated by bench {export.bench_version} (git {env.get('git_sha')}), "
        f"matrix `{train.matrix}`, cell key `{cell.key}`.",
        "",
        f"- Base model: `{cell.model.source}`, revision `{cell.model.revision or 'as resolved'}`, "
        f"weights {cell.model.weights}",
        f"- Quantization during training: {cell.bits}-bit; evaluation at {cell.eval_bits}-bit",
        f"- Training set: {cell.task} (tasks {', '.join(training_set(cell.task).train_tasks)})",
        *[f"- {note}" for note in train.notes if note.startswith("training mix")],
        f"- Recipe: {_recipe(cell, train.metrics.get('optimizer'))}",
    ]
    if export.merged:
        lines.append(
            "- Merged onto the 16-bit weights of the same checkpoint (`--dequantize`): the cell trained "
            f"on a {cell.bits}-bit base, so this model's outputs can differ from the recorded scores"
            if export.dequantized else "- Merged onto the 16-bit base it trained on (peft merge_and_unload)"
        )  # fmt: skip
    lines += ["", "## Scores", ""]
    if not _scores(export):
        return lines + ["No evaluation record: this cell has not been evaluated."]
    lines += [
        f"Protocol `{cell.eval.protocol}`, {export.evaluation.scores[0].get('n')} test rows per task, "
        "95% bootstrap intervals in brackets.", "",
        "| task | scorer | accuracy | weighted F1 |", "|---|---|---|---|",
    ]  # fmt: skip
    for s in _scores(export):
        lines.append(
            f"| {s['task']} | {s['scorer']} | {_with_ci(s, 'accuracy')} | {_with_ci(s, 'weighted_f1')} |"
        )
    return lines


def _with_ci(score: dict, name: str) -> str:
    value, ci = score.get(name), score.get(f"{name}_ci")
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")


def _recipe(cell: Cell, ran: str | None) -> str:
    t = cell.train
    if t is None:
        return "none (base row)"
    steps = f"{t.max_steps} steps" if t.max_steps else f"{t.epochs} epochs"
    return (
        f"{t.method} r{cell.rank} alpha {t.lora_alpha} dropout {t.lora_dropout} on "
        f"{', '.join(t.target_modules)}; lr {t.lr}, {steps}, batch {t.batch_per_gpu} x {cell.gpus} GPUs "
        f"x accumulation {t.grad_accum}, max length {t.max_seq_len}, optimizer {ran or t.optimizer}"
        + (f" (asked for {t.optimizer})" if ran and ran != t.optimizer else "")
        + f", seed {t.seed}"
    )
