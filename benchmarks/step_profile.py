"""Where one of bench's LoRA steps spends its time on this CPU: SmolLM2-135M 4-bit NF4 (double quant) with
LoRA r4 on q/k/v, 8 rows of 80 tokens, logits at 2 positions per row (as bench's sliced loss), at the
compute dtype given. Prints one timed step and torch.profiler's table by operator (self CPU time):
matmuls (aten::mm) against dequantization and element-wise work, which model FLOPs do not count.

    .venv/bin/python benchmarks/step_profile.py fp32|bf16 [model_dir]
"""

from __future__ import annotations

import sys
import time

import torch
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
from torch.profiler import ProfilerActivity, profile
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from bench.models.model_cache import cache_dir

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def build(path: str, dtype: torch.dtype):
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=dtype)  # fmt: skip
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype, quantization_config=quant, device_map={"": "cpu"}
    )
    model.config.use_cache = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lora = LoraConfig(r=4, lora_alpha=32, lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj"])
    model = get_peft_model(model, lora)
    for param in model.parameters():
        if param.requires_grad:  # as bench's worker: LoRA weights in fp32
            param.data = param.data.float()
    return model.train()


def main() -> None:
    dtype = DTYPES[sys.argv[1]]
    path = sys.argv[2] if len(sys.argv) > 2 else str(cache_dir() / "models" / "smollm2-135m-instruct-0.1.2")
    model = build(path, dtype)
    torch.manual_seed(0)
    rows, n = 8, 80
    ids = torch.randint(0, model.config.vocab_size, (rows, n))
    positions = torch.tensor([[n - 3, n - 2]] * rows)

    def step():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), logits_to_keep=positions).logits
        torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), ids[:, :2].flatten()).backward()

    step()  # warm-up
    start = time.perf_counter()
    step()
    print(f"{sys.argv[1]}: one step {time.perf_counter() - start:.2f} s, {torch.get_num_threads()} threads")
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=18))


if __name__ == "__main__":
    main()
