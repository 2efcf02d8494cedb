"""A matrix's evaluations end to end, loading included: N adapters plus the base row, evaluated
(1) by the paper's loop, one process per adapter as its scripts run (benchmarks/paper_eval.py), at
the same batch size as bench (so the ratio isolates loading the base once, not the batch),
(2) by bench's evaluation worker, one per cell, each loading the base, and
(3) by one bench worker that loads the base once and swaps the adapters on it, as bench's runner does
for consecutive evaluations on one base.

Wall time counts each side's processes from start to exit. bench's two sides must give identical
generations; the paper loop must give identical scores (bench.core.scoring, both scorers). Sides alternate
order between repetitions; one JSON line per run.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/eval_reuse.py --adapters 3 --repeats 3
    .venv/bin/python benchmarks/eval_reuse.py --model smollm2-135m-instruct --eval-bits 16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # run as a script: the sibling module
import measured  # noqa: E402
from score_check import score_check  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny", help="'tiny', a packaged model name or a local directory")
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--task", default="fpb")
    p.add_argument("--adapters", type=int, default=3, help="4-bit adapters of ranks 2, 4, 6, ...")
    p.add_argument("--steps", type=int, default=4, help="training steps per adapter (untimed)")
    p.add_argument("--eval-bits", type=int, default=8, choices=(4, 8, 16))
    p.add_argument("--limit", type=int, default=48, help="test rows per cell")
    p.add_argument("--batch", type=int, default=16, help="evaluation batch size, the same on every side")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="torch threads of every worker")
    p.add_argument("--out", type=Path, default=measured.RESULTS, help="JSON lines, appended (committed)")
    args = p.parse_args(argv)
    if args.data_dir is None:
        p.error("give --data-dir or set BENCH_DATA")
    args.data_dir = Path(args.data_dir).resolve()
    return args


def cells(args, work: Path) -> list:
    from bench.core.matrix import parse

    source = args.model if not Path(args.model).expanduser().exists() else str(Path(args.model).resolve())
    raw = {
        "name": "eval-reuse",
        "models": {"m": {"source": source}},
        "axes": {
            "model": ["m"],
            "quant": [{"bits": 4, "rank": 2 * (i + 1)} for i in range(args.adapters)],
            "task": [args.task],
            "eval_bits": [args.eval_bits],
        },
        "base": True,
        "train": {"max_steps": args.steps, "train_limit": 64, "batch_per_gpu": 8, "optimizer": "adamw"},
        "eval": {"limit": args.limit, "batch_size": args.batch, "bootstrap": 0},
    }
    return list(parse(raw, work / "eval-reuse.yaml").cells)


def samples(launcher, steps) -> dict:
    return {s.cell.id: next(launcher.cell_dir(s).glob("samples_*.jsonl")).read_text() for s in steps}


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.update(OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    os.environ.setdefault("BENCH_CACHE", str(Path(tempfile.gettempdir()) / "bench-speed-cache"))
    from bench.models.loading import resolve_source
    from bench.orchestration.launch import Launcher
    from bench.orchestration.runner import plan

    work = Path(tempfile.mkdtemp(prefix="bench-eval-reuse-"))
    launcher = Launcher(work / "results", args.data_dir, "eval-reuse", echo=False)
    steps = plan(cells(args, work), [])
    for step in (s for s in steps if s.phase == "train"):  # untimed: the adapters to evaluate
        record = launcher(step)
        if record.status != "ok":
            raise SystemExit(f"training {step.cell.id} failed: {record.error}\n{record.log_tail}")
    evals = [s for s in steps if s.phase == "eval"]

    def per_cell() -> tuple[float, dict]:
        t0 = time.monotonic()
        records = [launcher(s) for s in evals]
        return time.monotonic() - t0, {r.cell_id: r for r in records}

    def grouped() -> tuple[float, dict]:
        records, t0 = [], time.monotonic()
        launcher.group(evals, records.append)
        return time.monotonic() - t0, {r.cell_id: r for r in records}

    source = resolve_source(evals[0].cell.model, args.data_dir)
    paper_results: dict[str, dict] = {}

    def paper() -> tuple[float, dict]:
        t0 = time.monotonic()
        for step in evals:
            adapter = [] if step.cell.is_base else ["--adapter", str(launcher.cell_dir(step) / "adapter")]
            out = work / f"paper-{step.cell.key}.json"
            command = [
                sys.executable, str(HERE / "paper_eval.py"), "--model", source, *adapter,
                "--data-dir", str(args.data_dir), "--task", args.task, "--bits", str(args.eval_bits),
                "--limit", str(args.limit), "--batch", str(args.batch), "--max-new-tokens", "10",
                "--out", str(out),
            ]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"paper_eval.py failed:\n{done.stderr[-3000:]}")
            paper_results[step.cell.id] = json.loads(out.read_text())
        return time.monotonic() - t0, {}

    rounds, identical, same_scores = [], True, True
    for rep in range(args.repeats):
        sides = [("paper", paper), ("per_cell", per_cell), ("grouped", grouped)]
        done, outputs = {}, {}
        for name, side in sides if rep % 2 == 0 else sides[::-1]:
            wall, records = side()
            if name == "paper":
                generation = sum(r["eval_s"] for r in paper_results.values())
                done[name] = {"wall_s": round(wall, 3), "load_s": None, "eval_s": round(generation, 3)}
                continue
            bad = [r for r in records.values() if r.status != "ok"]
            if bad:
                raise SystemExit(
                    f"{name}: {bad[0].cell_id} {bad[0].status}: {bad[0].error}\n{bad[0].log_tail}"
                )
            done[name] = {
                "wall_s": round(wall, 3),
                "load_s": round(sum(r.metrics["load_s"] for r in records.values()), 3),
                "eval_s": round(sum(r.metrics["eval_s"] for r in records.values()), 3),
            }
            outputs[name] = samples(launcher, evals)
        identical &= outputs["per_cell"] == outputs["grouped"]
        for step in evals:
            check = score_check(args.task, next(launcher.cell_dir(step).glob("samples_*.jsonl")),
                                paper_results[step.cell.id])  # fmt: skip
            same_scores &= check["scores_identical"]
        rounds.append(done)
        print(f"repetition {rep + 1}/{args.repeats}: {json.dumps(done)}", flush=True)

    med = {
        s: {k: None if rounds[0][s][k] is None else statistics.median(r[s][k] for r in rounds)
            for k in rounds[0][s]}
        for s in ("paper", "per_cell", "grouped")
    }  # fmt: skip
    print(
        f"\n{len(evals)} evaluations ({args.adapters} adapters + base) of {args.model} "
        f"at {args.eval_bits}-bit, "
        f"{args.limit} {args.task} rows each, batch {args.batch}, torch threads {args.threads}; medians of "
        f"{args.repeats}:"
    )
    examples = args.limit * len(evals)
    names = {"paper": "paper loop, a process per adapter", "per_cell": "bench, a worker per cell",
             "grouped": "bench, one worker, base loaded once"}  # fmt: skip
    for side, m in med.items():
        load = "      -" if m["load_s"] is None else f"{m['load_s']:7.2f}"
        print(
            f"  {names[side]:38} wall {m['wall_s']:7.2f} s  ({examples / m['wall_s']:6.2f} examples/s)"
            f"   load {load} s   generation {m['eval_s']:7.2f} s"
        )
    ratios = {}
    for ours in ("grouped", "per_cell"):
        for base in ("paper", "per_cell"):
            if ours == base:
                continue
            paired = sorted(r[base]["wall_s"] / r[ours]["wall_s"] for r in rounds)
            ratios[f"{ours}_vs_{base}"] = round(med[base]["wall_s"] / med[ours]["wall_s"], 2)
            print(
                f"examples/s {ours} / {base} = {ratios[f'{ours}_vs_{base}']:.2f}x "
                f"(per repetition {paired[0]:.2f}-{paired[-1]:.2f}x)"
            )
    print(f"bench generations identical grouped vs per cell: {identical}; "
          f"scores identical to the paper loop (both scorers, every cell): {same_scores}")  # fmt: skip
    record = {
        "benchmark": "eval_reuse",
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": measured.host_facts(args.threads),
        "args": {k: str(v) for k, v in vars(args).items()},
        "medians": med,
        "ratios": ratios,
        "rounds": rounds,
        "identical": identical,
        "scores_identical_to_paper": same_scores,
    }
    measured.append(record, args.out)
    return 0 if identical and same_scores else 1


if __name__ == "__main__":
    raise SystemExit(main())
