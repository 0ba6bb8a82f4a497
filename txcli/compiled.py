"""torch.compile for the training step: whether to use it, the compiled forward pass and loss,
and how many graphs it has built (each recompile adds one, and costs a slow step)."""

from __future__ import annotations

from typing import Callable

import torch

from .loss import plain_smoothed_loss_sum


def resolve_compile(setting, device: torch.device) -> bool:
    """train.compile: true, false, or auto: compile on CUDA only. On the 2-core CPU compiled
    training measured slower than eager (bench/train_throughput.py, README); CUDA is unmeasured
    here, where inductor's fused kernels are its usual gain."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def compiled_forward_loss(train_model: torch.nn.Module, smoothing: float) -> Callable:
    """(src, tgt_in, tgt_out) -> summed loss, with the model and the loss compiled apart (the model
    wrapper works under DDP; a DDP module is best compiled whole). dynamic=True: one graph for
    every batch shape, not one per length bucket. Parameters are shared with the eager model,
    which validation and saving keep using."""
    model = torch.compile(train_model, dynamic=True)
    loss = torch.compile(plain_smoothed_loss_sum, dynamic=True)
    return lambda src, tgt_in, tgt_out: loss(model(src, tgt_in), tgt_out, smoothing)
