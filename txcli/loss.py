"""The training loss: label-smoothed cross-entropy (Szegedy et al. 2016), summed over the
non-padding targets, with its gradient written by hand for eager training and in whole-tensor
ops for torch.compile."""

from __future__ import annotations

import torch

from .tokenizer import PAD_ID

LOSS_ROWS = 256  # rows of logits handled at once: their fp32 copy stays in cache


def smoothed_loss_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over the non-padding targets (the one-hot target mixed
    with `smoothing` spread uniformly over the vocabulary):
    per token  logsumexp(z) - (1 - smoothing) * z[target] - smoothing * mean(z)."""
    logits = logits.reshape(-1, logits.size(-1))
    if logits.requires_grad:
        return _SmoothedCrossEntropy.apply(logits, target.reshape(-1), smoothing)
    return _smoothed_rows(logits, target.reshape(-1), smoothing)[0]


def _smoothed_rows(logits, target, smoothing):
    """(summed loss, logsumexp per row), LOSS_ROWS rows at a time, accumulated in float32."""
    V = logits.size(1)
    keep = target != PAD_ID
    lse = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    for start in range(0, logits.size(0), LOSS_ROWS):
        rows = slice(start, start + LOSS_ROWS)
        z = logits[rows].float()
        lse[rows] = torch.logsumexp(z, dim=-1)
        picked = z.gather(1, target[rows, None]).squeeze(1)
        per_row = lse[rows] - (1.0 - smoothing) * picked - (smoothing / V) * z.sum(-1)
        total += torch.where(keep[rows], per_row, 0.0).sum()
    return total, lse, keep


class _SmoothedCrossEntropy(torch.autograd.Function):
    """The loss and its gradient (softmax - smoothed target) in row blocks, without the full-size
    float32 log-probabilities, their gradient and the zero-filled buffers that
    F.cross_entropy(label_smoothing=...) goes through: on CPU the loss is memory-bound."""

    @staticmethod
    def forward(ctx, logits, target, smoothing):
        total, lse, keep = _smoothed_rows(logits, target, smoothing)
        ctx.save_for_backward(logits, target, lse, keep)
        ctx.smoothing = smoothing
        return total

    @staticmethod
    def backward(ctx, grad_total):
        logits, target, lse, keep = ctx.saved_tensors
        eps, V = ctx.smoothing, logits.size(1)
        grad = torch.empty_like(logits)
        scale = keep.float() * grad_total.float()
        in_place = grad.dtype == torch.float32  # float32 logits: work in grad's own rows, no copy
        for start in range(0, logits.size(0), LOSS_ROWS):
            rows = slice(start, start + LOSS_ROWS)
            z = logits[rows].float()
            g = torch.sub(z, lse[rows, None], out=grad[rows]) if in_place else z - lse[rows, None]
            g.exp_().sub_(eps / V)
            g.scatter_add_(1, target[rows, None], g.new_full((g.size(0), 1), eps - 1.0))
            g.mul_(scale[rows, None])
            if not in_place:
                grad[rows] = g
        return grad, None, None


def plain_smoothed_loss_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """smoothed_loss_sum in whole-tensor ops, for torch.compile: inductor fuses the forward and
    the backward into a few passes over the logits, which the row blocks above do by hand."""
    z = logits.reshape(-1, logits.size(-1)).float()
    target = target.reshape(-1)
    per_row = (torch.logsumexp(z, dim=-1) - (1.0 - smoothing) * z.gather(1, target[:, None]).squeeze(1)
               - (smoothing / z.size(1)) * z.sum(-1))
    return torch.where(target != PAD_ID, per_row, 0.0).sum()
