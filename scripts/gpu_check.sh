#!/usr/bin/env bash
# The one prepared GPU check (issue 6): on a single H100/H200 whose image has torch, transformers,
# peft, accelerate and pynvml but not bitsandbytes, DeepSpeed, datasets or lm-eval.
#
# Prepare here (no GPU needed), from the repository root:
#   sed 's/-d "$work\/sd" deepspeed /-d "$work\/sd" deepspeed==0.19.6 /' ../shared/tools/gpu_bundle.sh \
#     | bash -s .gpu/bundle.tgz            # DeepSpeed 0.19.6: the last release with 0/1 Adam
#   mkdir -p .gpu/data && cp -r ../shared/data/{fpb,ner} .gpu/data/
# Then run it there with `.gpu` carried; results and reports land in $OUT (or ./gpu-out).
# It runs: the smoke matrix on the GPU (its cells request 0/1 Adam at world size 1), then the
# Table 1 rows that fit the time: the random-weight Llama 3.1 70B 4-bit r4 row first (its weights are
# drawn on the GPU while it loads, nothing on disk), then the 8B r8 rows at batch 4 and 8.
set -uo pipefail
out="${OUT:-$PWD/gpu-out}"
mkdir -p "$out"
tar xzf .gpu/bundle.tgz -C /tmp
export PYTHONPATH="/tmp/gpusite:$PWD" BENCH_DATA="$PWD/.gpu/data" BENCH_CACHE=/tmp/bench-cache
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
results="$out/results"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch, transformers, peft, bitsandbytes, deepspeed, lm_eval, cupy; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'bnb', bitsandbytes.__version__, 'deepspeed', deepspeed.__version__, 'lm_eval', lm_eval.__version__, 'cupy', cupy.__version__)"
} 2>&1 | tee "$out/env.txt"
run() { timeout "$1" python3 -m bench run "${@:2}" --results-dir "$results" --reports-dir "$out/reports"; }
[ "${SMOKE:-1}" = 1 ] && run "${SMOKE_BUDGET_S:-120}" matrices/smoke.yaml
[ "${BIG:-1}" = 1 ] && run "${BIG_BUDGET_S:-210}" matrices/table1.yaml --only "70b-random"
run "${TABLE1_BUDGET_S:-150}" matrices/table1.yaml --only "${TABLE1_ONLY:-8b-random__ner__(4bit|8bit|16bit)-r8__}"
# Whatever finished is in the store: render both reports from it even after a timeout.
python3 -m bench report matrices/smoke.yaml --results-dir "$results" --reports-dir "$out/reports"
python3 -m bench report matrices/table1.yaml --results-dir "$results" --reports-dir "$out/reports"
cp "$results/records.jsonl" "$out/records.jsonl"
tail -n 30 "$results"/cells/*/train.log > "$out/train-logs.txt" 2>/dev/null
