"""The committed speed results (benchmarks/results/speed.jsonl) as the Markdown tables the README quotes.

Per side: the median over repetitions of its steady throughput (training: real tokens/s over the steps
after the warm-up; evaluation: examples/s) with the min–max over repetitions, and the ratio to the
reference side computed per repetition (both ran back to back in it), median [min–max].

    python benchmarks/tables.py                 # the latest run in the file
    python benchmarks/tables.py --run RUN_ID --file other.jsonl
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measured  # noqa: E402

LABELS = {
    "bench": "bench as shipped (loss-position logits, length-grouped batches, instruction once where exact)",
    "bench_all_logits": "bench, logits at every position (`train.loss_logits: all`)",
    "bench_random": "bench, shuffled batches (`train.batching: random`)",
    "bench_no_prefix": "bench, every row computes its instruction (`train.prefix_reuse: off`)",
    "bench_prefix_always": "bench, instruction shared with LoRA dropout too (`train.prefix_reuse: always`)",
    "plain_grouped": "HF Trainer + peft, `group_by_length`, pad to longest",
    "plain_random": "HF Trainer + peft, random sampler, pad to longest",
}


def label(side: str) -> str:
    if side in LABELS:
        return LABELS[side]
    if side.startswith("paper_b"):
        batch, _, lever = side[7:].partition("_")
        extra = {"": "", "sorted": " + length-sorted batches", "stop": " + bench's early stop"}[lever]
        return f"paper's loop, batch {batch}{extra}"
    if side.startswith("lmeval_b"):
        return f"stock lm-eval `hf` (HFLM), batch {side[8:]}"
    if side.endswith("_no_prefix"):
        batch = side[7:].removesuffix("_no_prefix")
        return f"bench (lm-eval worker), batch {batch}, rows prefilled whole (`eval.prefix_reuse: off`)"
    if side.endswith("_merged"):
        batch = side[7:].removesuffix("_merged")
        return f"bench, batch {batch}, LoRA merged into the base (`eval.merge_adapter: true`)"
    return f"bench (lm-eval worker, as shipped), batch {side[7:]}"


def over_best_baseline(rows: list[dict], bench: str, baselines: list[str]) -> list[float]:
    """bench's examples/s over the faster of the baselines, per repetition that ran them all."""
    by_rep = {}
    for r in rows:
        by_rep.setdefault(r["rep"], {})[r["side"]] = r.get("examples_per_s")
    return [round(sides[bench] / max(sides[b] for b in baselines), 3) for sides in by_rep.values()
            if sides.get(bench) and all(sides.get(b) for b in baselines)]  # fmt: skip


def fmt(stats: dict, digits: int = 1) -> str:
    if not stats["n"]:
        return "–"
    return f"{stats['median']:.{digits}f} [{stats['low']:.{digits}f}–{stats['high']:.{digits}f}]"


def per_rep_ratios(rows: list[dict], side: str, ref: str, key: str, invert: bool) -> list[float]:
    """side / ref (or ref / side with invert) for every repetition that has both."""
    by_rep = {}
    for r in rows:
        by_rep.setdefault(r["rep"], {})[r["side"]] = r.get(key)
    out = []
    for sides in by_rep.values():
        a, b = sides.get(side), sides.get(ref)
        if a and b:
            out.append(round(b / a if invert else a / b, 3))
    return out


def table(rows: list[dict], key: str, unit: str, ref: str, ratio_name: str, invert: bool) -> list[str]:
    """One row per side. Training rows also show real tokens per CPU-second of the side's own process,
    median [min–max]: with one torch thread other work on the host hardly changes it (wall time it
    does); with more threads the CPU time also counts threads spinning while they wait for a peer that
    the OS has put aside, so on a busy host it drops too (measured: 2 threads, load 5-7, 17 CPU-s for
    a 27 s step). Quote wall-time tokens/s from a quiet host; use this column to spot a busy one."""
    sides = list(dict.fromkeys(r["side"] for r in sorted(rows, key=lambda r: (r["rep"], r["position"]))))
    if ref in sides:  # the reference first, then the others in the order they ran in the first repetition
        sides = [ref] + [s for s in sides if s != ref]
    cpu = any(r.get("tokens_per_cpu_s") for r in rows)
    extra = (" tokens per CPU-second |", "---|") if cpu else ("", "")
    lines = [
        f"| side | {unit} median [min–max] | {ratio_name} median [min–max] |{extra[0]} reps |",
        f"|---|---|---|{extra[1]}---|",
    ]
    for side in sides:
        mine = [r for r in rows if r["side"] == side]
        values = measured.median_interval([r.get(key) for r in mine])
        ratios = measured.median_interval(per_rep_ratios(rows, side, ref, key, invert))
        ratio = "1 (reference)" if side == ref else fmt(ratios, 2) + "×"
        cells = (
            f" {fmt(measured.median_interval([r.get('tokens_per_cpu_s') for r in mine]))} |" if cpu else ""
        )
        lines.append(f"| {label(side)} | {fmt(values)} | {ratio} |{cells} {values['n']} |")
    return lines


def host_line(rows: list[dict]) -> str:
    h = rows[0]["host"]
    loads = [r["host"].get("load_avg_1m") for r in rows if r["host"].get("load_avg_1m") is not None]
    load = f"{min(loads):.1f}–{max(loads):.1f}" if loads else "unknown"
    gpus = ", ".join(h.get("gpus") or []) or "no GPU"
    flags = " ".join(h.get("cpu_flags") or [])
    return (
        f"Host: {h.get('cpu_model')} ({h.get('cpu_count')} CPUs; flags {flags}), "
        f"{gpus}, torch {h.get('torch')} with {h.get('torch_threads')} threads, commit "
        f"{(h.get('git_commit') or '?')[:12]}; 1-minute load average during the runs {load}."
    )


def render(records: list[dict], run_id: str | None = None) -> str:
    rows = [r for r in records if r.get("benchmark") == "speed"]
    if not rows:
        return "no speed runs recorded"
    run_id = run_id or rows[-1]["run_id"]
    rows = [r for r in rows if r["run_id"] == run_id]
    if not rows:
        return f"no speed run {run_id} in the file"
    s = rows[0]["settings"]
    out = [f"Run `{run_id}`: {s.get('model')}, {s.get('task')}, {host_line(rows)}", ""]
    train = [r for r in rows if r["phase"] == "train"]
    if train:
        precisions = sorted({str(r.get("precision")) for r in train})
        out += [
            f"Training: {s.get('bits')}-bit r{s.get('rank')}, "
            f"{s.get('steps')} steps x batch {s.get('batch')}, "
            f"tokens/s = real (non-pad) tokens over steps {int(s.get('warmup', 0)) + 1}-{s.get('steps')} "
            f"(warm-up left out); precision {', '.join(precisions)}.",
            "",
            *table(train, "tokens_per_s", "tokens/s", "bench", "bench / side (per repetition)", invert=True),
            "",
        ]
    evals = [r for r in rows if r["phase"] == "eval"]
    if evals:
        b = s.get("eval_batch")
        ref = f"bench_b{b}"
        checks = [r["score_check"]["scores_identical"] for r in evals if "score_check" in r]
        examples = evals[0]["examples"]
        out += [
            f"Evaluation: {examples} test rows at {s.get('eval_bits')}-bit; scores identical on every side "
            f"and repetition (bench.core.scoring, every scorer): {all(checks) if checks else 'not checked'}.",
            "",
            *table(evals, "examples_per_s", "examples/s", ref, f"{ref} / side (per repetition)", True),
            "",
        ]
        baselines = [f"paper_b{b}_sorted", f"lmeval_b{b}"]
        best = measured.median_interval(over_best_baseline(evals, ref, baselines))
        if best["n"]:
            out += [f"{ref} over the faster of {' and '.join(baselines)}, per repetition: {fmt(best, 2)}x "
                    f"({best['n']} repetitions).", ""]  # fmt: skip
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--file", type=Path, default=measured.RESULTS)
    p.add_argument("--run", help="a run id from the file (default: the latest)")
    args = p.parse_args(argv)
    print(render(measured.read(args.file), args.run))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
