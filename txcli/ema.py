"""An exponential moving average of the weights, kept beside the trained ones during training."""

from __future__ import annotations

import contextlib

import torch


class EMA:
    """Exponential moving average of the parameters, updated after each optimizer step:

        ema = d * ema + (1 - d) * w,   d = min(decay, (1 + t) / (10 + t)),   t = updates so far

    The warm-up on d (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the
    first steps from leaving the average stuck near the random initial weights: at t = 1 it takes
    82% of the new weights, and d reaches 0.999 only after ~9,000 updates. Kept in float32 on the
    model's device; buffers (the positional table) are not averaged."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]  # shared (tied) tensors once
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay_at(updates))

    @torch.no_grad()
    def reset(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            s.copy_(p.detach())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in zip(self.names, self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor]) -> bool:
        """From a checkpoint's trainer tensors; False (nothing loaded) if it holds no EMA."""
        if not all(f"ema.{n}" in tensors for n in self.names):
            return False
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                s.copy_(tensors[f"ema.{n}"])
        return True

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        params = list(model.parameters())
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow):
                p.copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)
