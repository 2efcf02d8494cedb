"""Model FLOPs utilisation of bench's training worker on this host, and what the CPU's native bf16
changes: the issue's cell (SmolLM2-135M 4-bit r4 on FPB, batch 8) trained by the real worker
(bench.workers.train, DeepSpeed engine, its own loop), once in fp32 (what bench ran on every CPU before
issue 21) and once in bf16 where the CPU has native bf16 matmuls (torch's oneDNN check, never assumed).
The sides are the cell's train.precision: fp32 pinned, and bf16 (bench's default: bf16 where the CPU has
it natively, bench.core.precision). Sides alternate; each prints its record's FLOPs, achieved FLOP/s,
peak and MFU.

    BENCH_DATA=../shared/data .venv/bin/python benchmarks/mfu.py --out benchmarks/results/mfu.jsonl

benchmarks/results/mfu.jsonl holds its runs; each line has the 1-minute load average, and the peak its
probe source (with the load at probe time): a busy host makes both numbers low.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.core.cell import Cell, ModelSpec, TrainConfig


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", type=Path, default=os.environ.get("BENCH_DATA"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--out", type=Path, help="append one JSON line per run")
    return p.parse_args(argv)


def native_bf16() -> bool:
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def cell(steps: int, precision: str) -> Cell:
    train = TrainConfig(max_steps=steps, batch_per_gpu=8, max_seq_len=256, optimizer="adamw", lr=5e-4,
                        precision=precision)  # fmt: skip
    return Cell(ModelSpec("smollm2", "smollm2-135m-instruct"), "fpb", 4, 4, 1, 16, train)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(side: str, steps: int, data_dir: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="mfu-") as folder:
        cell_dir = Path(folder)
        (cell_dir / "cell.json").write_text(json.dumps(cell(steps, side).to_dict()))
        args = [sys.executable, "-m", "bench.workers.train", "--cell-dir", str(cell_dir), "--data-dir",
                str(data_dir)]  # fmt: skip
        env = {**os.environ, "MASTER_PORT": str(free_port())}  # other runs on this host hold the default
        done = subprocess.run(args, capture_output=True, text=True, env=env)
        outcome = json.loads((cell_dir / "train-outcome.json").read_text())
    if outcome["status"] != "ok":
        raise SystemExit(f"{side}: {outcome.get('error')}\n{done.stdout[-2000:]}")
    return outcome["metrics"]


def main(argv=None) -> int:
    args = parse_args(argv)
    sides = ["fp32", "bf16"] if native_bf16() else ["fp32"]
    print(f"native bf16 (torch.ops.mkldnn._is_mkldnn_bf16_supported): {native_bf16()}; 1-min load "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")  # fmt: skip
    for repeat in range(args.repeats):
        for side in sides if repeat % 2 == 0 else sides[::-1]:
            m = run(side, args.steps, args.data_dir)
            row = {"side": side, "repeat": repeat, "load": os.getloadavg()[0],
                   **{k: m.get(k) for k in ("precision", "precision_reason", "tokens_per_s", "train_s",
                                            "steps", "flops_per_token",
                                        "flops_per_token_parts", "achieved_flops_per_s", "peak_flops_per_s",
                                        "peak_source", "mfu", "train_loss_last")}}  # fmt: skip
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
