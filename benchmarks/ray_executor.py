"""The Ray executor against the local one.

`wall`: wall time of a matrix of independent small cells (the tiny model: 2 quantizations x 2 tasks =
4 trainings, then one grouped evaluation), `bench run` with the local executor, then with
`--executor ray` on a local 2-node Ray cluster (ray.cluster_utils; one fake GPU per node, so two steps
at once). Both sides share this machine's cores: the number says what running steps side by side
buys on these cores, not what a second machine would.

`estimate`: the paper's matrix (`bench plan matrices/paper.yaml --executor ray`) on a described
cluster: each step's time from its training FLOPs (4 x params x tokens for LoRA on a frozen base,
6 x with gradient checkpointing's recompute) or generation FLOPs (2 x params x tokens) at a stated
peak and utilisation; the makespan when steps start, in plan order, as soon as a node has the GPUs
(what Ray does), against the same steps one after another.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/ray_executor.py wall
    BENCH_DATA=../shared/data .venv/bin/python benchmarks/ray_executor.py estimate --nodes 4 --gpus-per-node 4
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "reports" / "cpu" / "ray-executor.json"
WALL_MATRIX = {
    "name": "ray-wall",
    "models": {"tiny": {"source": "tiny"}},
    "axes": {"model": ["tiny"], "quant": [{"bits": 4, "rank": 4}, {"bits": 8, "rank": 8}],
             "task": ["fpb", "fiqa_sa"]},
    "train": {"max_steps": 8, "train_limit": 128, "batch_per_gpu": 8, "max_seq_len": 128,
              "time_limit_s": 900},
    "eval": {"limit": 16, "batch_size": 8, "bootstrap": 50, "time_limit_s": 900},
}  # fmt: skip


def wall(args) -> dict:
    from bench.orchestration import local_cluster

    work = Path(tempfile.mkdtemp(prefix="ray-wall-"))
    matrix = work / "ray-wall.yaml"
    matrix.write_text(yaml.safe_dump(WALL_MATRIX))
    env = {**os.environ, "BENCH_CACHE": str(work / "cache")}
    build = f"import pathlib, bench.models.tiny as t; t.tiny_model_dir(pathlib.Path({str(args.data_dir)!r}))"
    subprocess.run([sys.executable, "-c", build], env=env, check=True)  # the model once, outside the timing
    sides = {"local": _timed(matrix, work / "local", env)}
    ray_tmp = Path(f"/tmp/ray-wall-{os.getpid()}")
    cluster = local_cluster.start(nodes=2, gpus=1, tmp=ray_tmp)
    try:
        sides["ray"] = _timed(matrix, work / "ray", {**env, **os.environ, "BENCH_CACHE": env["BENCH_CACHE"],
                              "RAY_ADDRESS": cluster.address}, "--executor", "ray")  # fmt: skip
    finally:
        cluster.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "benchmark": "wall", "matrix": WALL_MATRIX, "sides": sides,
        "cores": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
        "note": "local: one step at a time, each using the machine's cores; ray: 2 nodes of one fake GPU "
        "each on this same machine, so two steps at once share the same cores. The machine was shared with "
        "other work while this ran.",
    }  # fmt: skip


def _timed(matrix: Path, out: Path, env: dict, *extra) -> dict:
    command = [sys.executable, "-m", "bench", "run", str(matrix), "--results-dir", str(out / "results"),
               "--reports-dir", str(out / "reports"), "--no-report", *extra]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=3600)
    seconds = round(time.monotonic() - start, 1)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-3000:] + done.stderr[-3000:])
    rows = [json.loads(line) for line in (out / "results" / "records.jsonl").read_text().splitlines()]
    return {
        "wall_s": seconds,
        "records": [(r["cell_id"], r["phase"], r["status"], r["wall_s"]) for r in rows],
        "step_s_sum": round(sum(r["wall_s"] for r in rows if r["phase"] == "train") + _eval_span(rows), 1),
    }


def _eval_span(rows: list[dict]) -> float:
    return sum(r["wall_s"] for r in rows if r["phase"] == "eval")


def step_seconds(step, data_dir: Path, peak: float, train_util: float, eval_util: float) -> float:
    """One step's predicted seconds on its GPUs from FLOPs (see the module's docstring)."""
    from bench.core.catalog import training_set
    from bench.core.data import load_splits
    from bench.planning.memory import parameter_count
    from bench.planning.planner import CHARS_PER_TOKEN, architecture

    cell = step.cell
    params = parameter_count(architecture(cell.model))
    sets = training_set(cell.task)
    if step.phase == "train":
        rows = [r for t in sets.train_tasks for r in load_splits(t, data_dir).train]
        chars = sum(
            min(len(r["context"]) + len(r["target"]), cell.train.max_seq_len * CHARS_PER_TOKEN) for r in rows
        )
        flops = (
            (6 if cell.train.gradient_checkpointing else 4)
            * params
            * cell.train.epochs
            * chars
            / CHARS_PER_TOKEN
        )
        return flops / (peak * train_util * cell.gpus)
    rows = [r for t in sets.eval_tasks for r in load_splits(t, data_dir).test]
    tokens = sum(len(r["context"]) / CHARS_PER_TOKEN + 16 for r in rows)  # prompt + a short answer
    return 2 * params * tokens / (peak * eval_util * cell.gpus_per_node)


def estimate(args) -> dict:
    from bench.core.matrix import load
    from bench.orchestration.parallel_plan import eval_base, parallel_view
    from bench.orchestration.runner import plan

    matrix = load(args.matrix)
    steps = plan(matrix.cells, [])
    seconds = {id(s): step_seconds(s, args.data_dir, args.peak_tflops * 1e12, args.train_mfu, args.eval_mfu)
               for s in steps}  # fmt: skip
    # One evaluation task per base (its cells one after another on one loaded base), after that
    # base's trainings: the Ray executor's tasks.
    tasks, evals = [], {}
    for s in steps:
        if s.phase == "train":
            tasks.append((f"train {s.cell.id}", seconds[id(s)], s.cell.gpus, eval_base(s)))
        else:
            evals.setdefault(eval_base(s), [0.0, s.cell.gpus_per_node])[0] += seconds[id(s)]
    makespan = _schedule(tasks, evals, args.nodes, args.gpus_per_node)
    serial = sum(seconds.values())
    return {
        "benchmark": "estimate", "matrix": str(args.matrix), "steps": len(steps),
        "cluster": f"{args.nodes} nodes x {args.gpus_per_node} GPUs",
        "assumptions": {"peak_tflops_per_gpu": args.peak_tflops, "train_utilisation": args.train_mfu,
                        "eval_utilisation": args.eval_mfu,
                        "tokens": "every training row per epoch, capped at max_seq_len; ~4 chars/token"},
        "serial_h": round(serial / 3600, 1), "ray_makespan_h": round(makespan / 3600, 1),
        "speedup": round(serial / makespan, 2),
        "plan": parallel_view(steps),
        "step_h": {f"{s.phase} {s.cell.id}": round(seconds[id(s)] / 3600, 2) for s in steps},
    }  # fmt: skip


def _schedule(tasks, evals, nodes: int, per_node: int) -> float:
    """Event simulation of the Ray executor: a task starts, in submission order, on the first node with
    enough free GPUs; a base's evaluation is submitted when its last training ends."""
    free, clock, running = [per_node] * nodes, 0.0, []  # running: (end, node, gpus, base)
    queue = list(tasks)
    waiting = {base: sum(1 for t in tasks if t[3] == base) for base in evals}
    queue += [(f"eval {b}", s, g, b) for b, (s, g) in evals.items() if waiting[b] == 0]
    while queue or running:
        for task in list(queue):
            node = next((i for i, f in enumerate(free) if f >= task[2]), None)
            if node is not None:
                free[node] -= task[2]
                heapq.heappush(
                    running, (clock + task[1], node, task[2], task[3], task[0].startswith("train"))
                )
                queue.remove(task)
        clock, node, gpus, base, trained = heapq.heappop(running)
        free[node] += gpus
        if trained:
            waiting[base] -= 1
            if waiting[base] == 0:
                queue.append((f"eval {base}", evals[base][0], evals[base][1], base))
    return clock


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=("wall", "estimate"))
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--matrix", type=Path, default=REPO / "matrices" / "paper.yaml")
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=4)
    p.add_argument("--peak-tflops", type=float, default=150.0, help="bf16 dense peak per GPU")
    p.add_argument("--train-mfu", type=float, default=0.25, help="training utilisation of that peak")
    p.add_argument("--eval-mfu", type=float, default=0.05, help="generation utilisation (memory-bound)")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    result = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **(wall if args.what == "wall" else estimate)(args),
    }
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results[args.what] = result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k not in ("plan", "step_h", "matrix")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
