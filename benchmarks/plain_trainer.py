"""The baseline for benchmarks/speed.py: QLoRA fine-tuning with the standard tools (transformers Trainer +
peft + bitsandbytes), nothing from bench in the timed part. The script lives in bench.workers.plain, where the
regression gate (`bench check --run`) runs it too; this file is its command line for the benchmarks.

    python benchmarks/plain_trainer.py --model DIR --data-dir DATA --bits 4 --rank 4 --steps 20 --out r.json
"""

from bench.workers.plain import main

if __name__ == "__main__":
    raise SystemExit(main())
