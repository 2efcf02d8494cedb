"""Model FLOPs of a LoRA training step on a frozen (quantized) Llama-shaped base, from its config.

Only matrix multiplications count (norms, activations, softmax, RoPE, dequantization and the optimizer
are a few percent at most and are not "model FLOPs"); a matmul of (m x k) by (k x n) is 2mkn FLOPs.
Per token, a linear layer d_in -> d_out costs:

    forward                      2 d_in d_out
    input gradient  dX = dY W    2 d_in d_out   only where X requires grad (see below)
    weight gradient dW = dY^T X  2 d_in d_out   never for the frozen base: bench does not compute it

so a frozen base costs 4N per token (N its linear weights), not the 6N of full fine-tuning. A LoRA
adapter of rank r on that layer adds A: d_in -> r and B: r -> d_out, both trainable: forward 2r(d_in +
d_out), weight gradients 2r(d_in + d_out), and input gradients 2r d_out (B) + 2r d_in (A, only where X
requires grad).

Where gradients flow: autograd computes dX only for inputs that require grad. The embedding output does
not (the base is frozen) unless gradient checkpointing is on, where peft / bench call
enable_input_require_grads. So the flag starts at that, and turns on at the first LoRA module along the
residual stream; everything after it (the rest of that layer, every later layer, the lm_head) needs
input gradients. With LoRA on q/k/v (the paper), only layer 0's q/k/v input gradients are skipped.

Attention, per layer, for a row of n real tokens: scores Q K^T and the weighted sum P V are each
2 n^2 (heads x head_dim) FLOPs (grouped-query heads share K and V but every query head multiplies);
their backward is twice that (dQ, dK for the scores; dP, dV for the values; in layer 0 only those
whose inputs require grad). The full n x n square is
counted, as PaLM's and Megatron's MFU do and as the masked kernels compute; a causal kernel that skips
the upper triangle does about half. Padding is not model FLOPs: rows count at their real length, so
padding shows up as lower utilisation, not as more work.

The lm_head (hidden -> vocab, frozen) runs forward and input gradient only at the positions where the
loop computes logits: bench's worker at the loss positions only (the label and EOS on FPB, via
logits_to_keep; bench.workers.examples.target_loss), the plain HF Trainer at every position.

Gradient checkpointing recomputes each decoder layer's forward (linears, LoRA, attention) during the
backward pass: that recompute is counted (it is work the step really does; PaLM calls the ratio with
it "hardware FLOPs utilisation"). Reentrant checkpointing (torch's default, what peft's
prepare_model_for_kbit_training gets) reruns the whole layer; non-reentrant (transformers 5's own
default) stops once the tensors backward needs exist again: down_proj's input, so a frozen down_proj
is not rerun (nor the B of a LoRA on it: only its A's output is saved).

Pure (no torch): the worker feeds it each batch's row lengths and logit positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from bench.core.architecture import Shape

ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj")
LINEARS = (*ATTENTION_INPUTS, "o_proj", "gate_proj", "up_proj", "down_proj")
# The decoder layer's linears in the order the residual stream reaches them; modules of one stage read
# the same input, so they share whether that input requires grad.
STAGES = (ATTENTION_INPUTS, ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
NO_CHECKPOINTING, REENTRANT, NON_REENTRANT = "none", "reentrant", "non_reentrant"
CHECKPOINTING = (NO_CHECKPOINTING, REENTRANT, NON_REENTRANT)


@dataclass(frozen=True)
class FlopCount:
    """FLOPs by part; adds up over batches and divides by tokens."""

    base_forward: float = 0.0
    base_input_grads: float = 0.0
    lora: float = 0.0  # forward, weight gradients and input gradients of the adapters
    attention: float = 0.0  # score and value matmuls, forward and backward
    lm_head: float = 0.0
    recompute: float = 0.0  # gradient checkpointing's second forward of every layer

    @property
    def total(self) -> float:
        return sum(getattr(self, f.name) for f in fields(self))

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def per(self, tokens: float) -> dict[str, float]:
        return {f.name: round(getattr(self, f.name) / tokens, 1) for f in fields(self)}


@dataclass(frozen=True)
class LoraStep:
    """One LoRA training step's FLOP model: per-token linear costs fixed once, then per batch."""

    arch: Shape
    rank: int
    targets: tuple[str, ...]
    checkpointing: str = NO_CHECKPOINTING  # or REENTRANT / NON_REENTRANT (torch.utils.checkpoint's modes)

    def __post_init__(self):
        unknown = sorted(set(self.targets) - set(LINEARS))
        if unknown:
            raise ValueError(f"no FLOP model for LoRA targets {unknown}; known: {', '.join(LINEARS)}")
        if self.checkpointing not in CHECKPOINTING:
            raise ValueError(f"checkpointing {self.checkpointing!r}: one of {', '.join(CHECKPOINTING)}")

    @property
    def checkpointed(self) -> bool:
        return self.checkpointing != NO_CHECKPOINTING

    def linear_per_token(self) -> FlopCount:
        """Base and LoRA linears of every layer, per token (the gradient flag walks the residual stream)."""
        base_fwd = base_grad = lora = layer_fwd = 0.0
        needs_grad = self.checkpointed  # bench makes the embedding output require grad for checkpointing
        for _ in range(self.arch.layers):
            for stage in STAGES:
                for module in stage:
                    d_in, d_out = self.arch.linears()[module]
                    base_fwd += 2 * d_in * d_out
                    base_grad += 2 * d_in * d_out if needs_grad else 0
                    if module in self.targets:
                        lora += self.adapter_flops(d_in, d_out, needs_grad)
                        layer_fwd += 2 * self.rank * (d_in + d_out)
                needs_grad = needs_grad or any(m in self.targets for m in stage)
        layer_fwd += base_fwd - self.layers_not_recomputed()
        return FlopCount(base_fwd, base_grad, lora, recompute=layer_fwd if self.checkpointed else 0.0)

    def layers_not_recomputed(self) -> float:
        """Per token, the trailing forward work non-reentrant checkpointing's early stop skips."""
        if self.checkpointing != NON_REENTRANT:
            return 0.0
        d_in, d_out = self.arch.linears()["down_proj"]
        skipped = 2 * self.rank * d_out if "down_proj" in self.targets else 2 * d_in * d_out
        return skipped * self.arch.layers

    def adapter_flops(self, d_in: int, d_out: int, input_grad: bool) -> float:
        """Per token: forward and weight gradients of A and B, B's input gradient, A's where X needs one."""
        forward = 2 * self.rank * (d_in + d_out)
        return 2 * forward + 2 * self.rank * d_out + (2 * self.rank * d_in if input_grad else 0)

    def first_attention_backward(self) -> float:
        """Layer 0's attention backward as a multiple of its forward (every later layer's is 2): dV, dP,
        dQ and dK are half a forward each, and each runs only where its input requires grad."""
        q, k, v = (self.checkpointed or m in self.targets for m in ATTENTION_INPUTS)
        return 0.5 * (v + (q or k) + q + k)

    def batch(self, lengths: Sequence[int], logit_positions: int, attended: int = 0) -> FlopCount:
        """FLOPs of one micro-batch: rows of these real lengths, logits computed at `logit_positions`.
        `attended`: keys every row attends to before its own tokens (a shared prefix computed once,
        bench.workers.prefix), which cost attention but no linear layers here."""
        tokens = sum(lengths)
        linear = self.linear_per_token()
        width = self.arch.heads * self.arch.head_dim
        forward = 4 * width * sum(n * (n + attended) for n in lengths)  # per layer: scores + values
        backward = 2 * (self.arch.layers - 1) + self.first_attention_backward()
        attention = forward * (self.arch.layers + backward)
        head = 4 * self.arch.hidden * self.arch.vocab * logit_positions  # forward + input gradient
        recompute = linear.recompute * tokens + (forward * self.arch.layers if self.checkpointed else 0)
        return FlopCount(
            base_forward=linear.base_forward * tokens,
            base_input_grads=linear.base_input_grads * tokens,
            lora=linear.lora * tokens,
            attention=attention,
            lm_head=head,
            recompute=recompute,
        )
