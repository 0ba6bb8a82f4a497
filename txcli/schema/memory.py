"""Training memory of a recipe, estimated before a model is built."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..model_schema import shares_embeddings
from .recipe import Recipe

# ---------------------------------------------------------------------------------------------
# memory, estimated before a model is built (no torch here: `tx recipe check` stays fast)

WARN_SHARE = 0.5  # warn past half the machine's memory; refuse past all of it
ACTIVATION_FLOATS_PER_LAYER = 16  # x d_model, per token and layer: see memory_estimate
LOGIT_FLOATS = 3  # logits, their log-softmax and its gradient, per target token and subword


def parameter_count(recipe: Recipe) -> int:
    """Parameters of the model the recipe builds (txcli/model.py), with a vocabulary of
    tokenizer.vocab_size on each side (the trained one may come out a little smaller)."""
    m, v = recipe.model, recipe.tokenizer.vocab_size
    d, f = m.d_model, m.ff
    attention = 4 * d * d + 4 * d  # fused Q,K,V and the output projection, with biases
    feed_forward = 2 * d * f + f + d
    norm = 2 * d
    encoder_layer = attention + feed_forward + 2 * norm
    decoder_layer = 2 * attention + feed_forward + 3 * norm  # self- and cross-attention
    shared = shares_embeddings(m.tie_embeddings, recipe.tokenizer.joint)
    embeddings = v * d * (1 if shared else 2)
    output = (v if m.output_bias else 0) if m.tie_embeddings else v * d + v  # untied: always a bias
    final_norms = 2 * norm if m.norm == "pre" else 0
    return (m.encoder_layers * encoder_layer + m.decoder_layers * decoder_layer
            + embeddings + output + final_norms)


@dataclass(frozen=True)
class MemoryEstimate:
    parameters: int
    state_bytes: int  # weights, gradients, AdamW's two moments
    activation_bytes: int
    machine_bytes: Optional[int]  # None where it cannot be read

    @property
    def total_bytes(self) -> int:
        return self.state_bytes + self.activation_bytes

    @property
    def too_big(self) -> bool:
        return self.machine_bytes is not None and self.total_bytes > self.machine_bytes

    @property
    def warning(self) -> Optional[str]:
        """A line to print when training would take more than half the machine's memory."""
        if self.machine_bytes is None or self.too_big or self.total_bytes <= WARN_SHARE * self.machine_bytes:
            return None
        return self.describe()

    def describe(self) -> str:
        gib = 1 << 30
        of = f" of this machine's {self.machine_bytes / gib:.1f} GiB" if self.machine_bytes else ""
        return (f"training needs about {self.total_bytes / gib:.1f} GiB{of} "
                f"({self.parameters:,} parameters: {self.state_bytes / gib:.1f} GiB for fp32 weights, "
                f"gradients and AdamW state; {self.activation_bytes / gib:.1f} GiB of activations)")


def memory_estimate(recipe: Recipe) -> MemoryEstimate:
    """Training memory, roughly, in fp32 (bf16 and fp16 need less activation memory, not less state):

        state       = 4 bytes x parameters x 4        (weights, gradients, AdamW's m and v)
        activations = 4 bytes x batch_tokens x ((encoder_layers + decoder_layers)
                                                 x (16 x d_model + 2 x ff) + 3 x vocab_size)

    batch_tokens bounds the padded tokens of a batch on each side. Per token, a layer keeps
    about 16 x d_model floats for the backward pass (its inputs, Q/K/V, attention output, norms,
    dropout masks) and 2 x ff for the feed-forward hidden layer and its activation; the output
    layer keeps logits, log-softmax and gradient over the whole vocabulary. Compared with
    total memory: past it the recipe is refused, past half of it `recipe check` and `train` warn.
    """
    m, t = recipe.model, recipe.train
    params = parameter_count(recipe)
    per_token = ((m.encoder_layers + m.decoder_layers) * (ACTIVATION_FLOATS_PER_LAYER * m.d_model + 2 * m.ff)
                 + LOGIT_FLOATS * recipe.tokenizer.vocab_size)
    return MemoryEstimate(parameters=params, state_bytes=4 * 4 * params,
                          activation_bytes=4 * t.batch_tokens * per_token, machine_bytes=machine_memory())


def machine_memory() -> Optional[int]:
    """Total memory in bytes: physical RAM, or the container's cgroup limit if that is lower.
    On CUDA the device is not known when a recipe is checked, so RAM stands in for it."""
    total = None
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemTotal:"):
                        total = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError, IndexError):
            pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit() and (total is None or int(limit) < total):
            total = int(limit)
    except OSError:
        pass
    return total
