"""The optimizer and its learning-rate schedule: AdamW with decay on the weight matrices only,
inverse-sqrt or cosine with linear warmup, and loading AdamW's state from a checkpoint."""

from __future__ import annotations

import math

import torch

from . import checkpoint as ckpt
from .errors import TxError


def lr_at(step: int, lr: float, warmup: int, schedule: str, max_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer update number `step` (1-based).

    inverse_sqrt (Vaswani et al. 2017, with the peak at `lr`): lr * min(step/warmup, sqrt(warmup/step))
    cosine: linear warmup to lr, then min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2,
            progress = (step - warmup) / (max_steps - warmup), held at 1 after max_steps.
    Neither goes below min_lr.
    """
    step = max(step, 1)
    if schedule == "inverse_sqrt":
        w = max(warmup, 1)
        return max(min_lr, lr * min(step / w, math.sqrt(w / step)))
    if schedule == "cosine":
        if step < warmup:
            return max(min_lr, lr * step / warmup)
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm gains (1-D tensors) get no weight decay. The fused kernel
    (same update, one pass per tensor, so fewer trips through memory) where this torch has it
    for the device."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or version
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict, saved: dict, where) -> None:
    """AdamW's state as a training checkpoint keeps it: its tensors among the trainer tensors, the
    rest in state.json (`saved`) under "optimizer". A TxError naming `where` if they do not fit."""
    try:
        optimizer.load_state_dict(ckpt.optimizer_from_tensors(tensors, saved["optimizer"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise TxError(f"{where}: damaged optimizer state ({str(err).splitlines()[0]})") from None
