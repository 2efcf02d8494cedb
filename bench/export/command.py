"""`bench export MATRIX CELL_ID --to DIR [--merged [--dequantize]]`: a cell's adapter, or a merged model
(bench.workers.export, a subprocess: the CLI loads no torch), with its model card (bench.export.card)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.core.matrix import Matrix, MatrixError
from bench.core.records import Phase, Status
from bench.core.store import Store, StoreError, latest
from bench.export.card import Export, model_card


def export(matrix: Matrix, store: Store, cell_id: str, out_dir: Path, merged: bool, dequantize: bool,
           data_dir: Path | None) -> int:  # fmt: skip
    cell = next((c for c in matrix.cells if c.id == cell_id), None)
    if cell is None:
        raise MatrixError(
            f"{matrix.path}: no cell {cell_id!r}; `bench plan {matrix.path}` lists the cell ids"
        )
    if cell.is_base:
        raise MatrixError(f"{cell_id} is a base row: it has no adapter to export")
    if merged and cell.bits in (4, 8) and not dequantize:
        raise MatrixError(
            f"{cell_id} trained on a {cell.bits}-bit base: merging LoRA weights into quantized weights "
            "rounds the update away and saves a model transformers cannot load without bitsandbytes; "
            "--dequantize merges onto the 16-bit weights of the same checkpoint (the card says so)"
        )
    if merged and cell.model.weights == "random":
        raise MatrixError(f"{cell_id}: model {cell.model.name} has random weights; nothing worth merging")
    last = latest(store.records())
    train, evaluation = last.get((cell.key, Phase.TRAIN)), last.get((cell.key, Phase.EVAL))
    if train is None or train.status != Status.OK or "adapter" not in train.artifacts:
        raise StoreError(f"{cell_id}: no successful training record in {store.path}; `bench run` it first")
    adapter = store.root / train.artifacts["adapter"]
    if not adapter.is_dir():
        raise StoreError(f"{cell_id}: the adapter folder {adapter} is missing")
    out_dir.mkdir(parents=True, exist_ok=True)
    if merged:
        _merge(adapter, out_dir, cell.to_dict(), data_dir)
    else:
        shutil.copytree(adapter, out_dir, dirs_exist_ok=True)
    ok_eval = evaluation if evaluation is not None and evaluation.status == Status.OK else None
    card = Export(cell, train, ok_eval, merged, merged and cell.bits in (4, 8), _version())
    (out_dir / "README.md").write_text(model_card(card), encoding="utf-8")
    print(f"exported {cell_id} ({'merged model' if merged else 'adapter'}) with its model card to {out_dir}")
    return 0


def _merge(adapter: Path, out_dir: Path, cell: dict, data_dir: Path | None) -> None:
    if data_dir is None:
        raise MatrixError(
            "--merged needs the data folder (for the tiny model's tokenizer): --data-dir or BENCH_DATA"
        )
    cell_json = out_dir / ".cell.json"
    cell_json.write_text(json.dumps(cell))
    command = [sys.executable, "-m", "bench.workers.export", "--cell", str(cell_json),
               "--adapter", str(adapter), "--to", str(out_dir), "--data-dir", str(data_dir)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    cell_json.unlink(missing_ok=True)
    if done.returncode != 0:
        raise StoreError(f"merging failed ({' '.join(command)}):\n{done.stderr[-2000:]}")


def _version() -> str:
    try:
        return metadata.version("bench")
    except metadata.PackageNotFoundError:
        return "unknown"
