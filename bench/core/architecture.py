"""A Llama-family model's shapes, read from its transformers config: what the memory planner and the
FLOPs count both compute from. Pure (no torch)."""

from __future__ import annotations

from dataclasses import dataclass

LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each linear layer in one decoder layer."""
        h, i, q, kv = self.hidden, self.intermediate, self.q_dim, self.kv_dim
        dims = ((h, q), (h, kv), (h, kv), (q, h), (h, i), (h, i), (i, h))
        return dict(zip(LINEAR_MODULES, dims, strict=True))


SHAPE_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


def config_problem(config) -> str | None:
    """What keeps shape() from reading a config.json, as a sentence; None when it can."""
    if not isinstance(config, dict):
        return f"holds a JSON {type(config).__name__}, not an object of model settings"
    for key in SHAPE_KEYS + ("num_key_value_heads", "head_dim"):
        value = config.get(key)
        if key in SHAPE_KEYS and value is None:
            return f"has no '{key}' (a transformers Llama-family config needs {', '.join(SHAPE_KEYS)})"
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            return f"has '{key}': {value!r}; it must be a positive whole number"
    if config["hidden_size"] % config["num_attention_heads"] and not config.get("head_dim"):
        return "has a hidden_size that num_attention_heads does not divide, and no head_dim"
    return None


def shape(config: dict) -> Shape:
    heads = config["num_attention_heads"]
    return Shape(
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        layers=config["num_hidden_layers"],
        heads=heads,
        kv_heads=config.get("num_key_value_heads") or heads,
        head_dim=config.get("head_dim") or config["hidden_size"] // heads,
        vocab=config["vocab_size"],
        tied=bool(config.get("tie_word_embeddings", False)),
    )
