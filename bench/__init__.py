"""bench: benchmark harness and reporter for LoRA / QLoRA fine-tuning of quantized financial LLMs."""

__version__ = "0.1.0"
