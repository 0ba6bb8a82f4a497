"""A cheaper dropout mask for training on CPU, and the swap that puts it into a model for the
length of a block: PackedDropout draws one 64-bit random number for four elements where torch's
CPU dropout draws a float per element, and drawing is most of dropout's time there."""

from __future__ import annotations

import contextlib
from typing import Callable

import numpy as np
import torch


@torch.library.custom_op("txcli::random_bits", mutates_args=())
def random_bits(n: int, device: torch.device) -> torch.Tensor:
    """n uniform 64-bit integers. On CPU from numpy's SFC64 (a cheaper generator than torch's
    mt19937), seeded with a draw from torch's generator, so that torch.manual_seed and the RNG
    state a checkpoint keeps decide them; one thread draws them. An opaque op to torch.compile,
    which cannot trace the in-place random_ (a graph break) and would otherwise draw its own
    masks, and draw them again in the backward pass."""
    if device.type == "cpu":
        seed = int(torch.empty((), dtype=torch.int64).random_())
        return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))
    return torch.empty(n, dtype=torch.int64, device=device).random_(-(2 ** 63), None)


@random_bits.register_fake
def _(n, device):
    return torch.empty(n, dtype=torch.int64, device=device)


class PackedDropout(torch.nn.Module):
    """nn.Dropout with a cheaper mask, for CPU: one 64-bit random number makes four 16-bit ones,
    each compared with p * 2^16 (torch's CPU dropout draws a float per element, and drawing
    takes most of its time). The mask is then made once as numbers, 0 or 1/(1-p) in x's dtype, so
    that the forward and the backward pass are each one multiply: on CPU torch.where with a
    boolean mask costs several multiplies. p is rounded to a multiple of 2^-16 (0.1 -> 0.100006);
    kept values are scaled by the exact inverse keep rate, so expectations stay unbiased. No
    parameters: state dicts do not change."""

    def __init__(self, p: float):
        super().__init__()
        dropped = round(p * 65536)
        self.p = p
        self.threshold = dropped - 32768  # int16 draws below it are dropped
        self.scale = 65536 / (65536 - dropped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        with torch.no_grad():
            bits = random_bits((n + 3) // 4, x.device).view(torch.int16)[:n].view(x.shape)
            # the comparison writes 1.0 or 0.0 straight into x's dtype: cheaper than a boolean mask
            # converted afterwards
            mask = torch.ge(bits, self.threshold, out=torch.empty_like(x))
            exact = x.dtype == torch.float32  # bf16 would round the scale: 1.1111 -> 1.1094
            if exact:
                mask.mul_(self.scale)
        # in bf16/fp16 a scalar multiply scales, so that only the product is rounded
        return x * mask if exact else x * mask * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_packed_dropout(model: torch.nn.Module) -> Callable[[], None]:
    """Swap every nn.Dropout of the model for PackedDropout of the same p (in place); returns the
    undo, which puts the original nn.Dropout modules back."""
    swapped = []
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(module, name, PackedDropout(child.p))
                swapped.append((module, name, child))

    def undo() -> None:
        for module, name, child in swapped:
            setattr(module, name, child)

    return undo


@contextlib.contextmanager
def packed_dropout(model: torch.nn.Module, on: bool = True):
    """The model trains with PackedDropout inside the block (when `on`), and holds its own
    nn.Dropout modules again after it, however the block ends."""
    undo = use_packed_dropout(model) if on else (lambda: None)
    try:
        yield model
    finally:
        undo()
