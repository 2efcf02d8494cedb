"""Worker: merge a cell's LoRA adapter into its base (peft merge_and_unload) and save the result in
safetensors with its tokenizer, loadable by AutoModelForCausalLM.from_pretrained without peft.

`python -m bench.workers.export --cell cell.json --adapter DIR --to DIR --data-dir DIR`. The base is
loaded at 16 bits (never through bitsandbytes): for a 4/8-bit cell that is the `--dequantize` case,
the 16-bit weights of the same checkpoint, which the CLI allows only when asked.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def merge(cell_json: Path, adapter: Path, out_dir: Path, data_dir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from bench.core.cell import Cell
    from bench.models.loading import load_tokenizer, resolve_source

    cell = Cell.from_dict(json.loads(cell_json.read_text()))
    source = resolve_source(cell.model, data_dir)
    base = AutoModelForCausalLM.from_pretrained(
        source, revision=cell.model.revision, trust_remote_code=cell.model.trust_remote_code,
        dtype=torch.float32 if not torch.cuda.is_available() else "auto",
    )  # fmt: skip
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out_dir, safe_serialization=True)
    load_tokenizer(source, cell.model).save_pretrained(out_dir)
    generation = Path(source) / "generation_config.json"
    if generation.is_file() and not (out_dir / "generation_config.json").is_file():
        (out_dir / "generation_config.json").write_text(generation.read_text())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", type=Path, required=True, help="the cell's cell.json")
    p.add_argument("--adapter", type=Path, required=True)
    p.add_argument("--to", type=Path, required=True)
    p.add_argument("--data-dir", type=Path, required=True)
    args = p.parse_args(argv)
    args.to.mkdir(parents=True, exist_ok=True)
    merge(args.cell, args.adapter, args.to, args.data_dir)
    print(f"merged model in {args.to}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
