"""What every command that runs the torch model on text shares (translate, score, evaluate,
attention-dump): the decoding settings resolved against a recipe's `decode` section, padding,
the precision, and translating id rows (lines of text become rows in translation.py).

Knows nothing of files or the terminal: rows of token ids in, hypotheses out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from .errors import UsageError
from .options import DECODE_PRECISIONS, DecodeOptions, check_choice, lay_over
from .precision import autocast, resolve_precision
from .search import SearchConfig, Workspace, beam_search, sample
from .tokenizer import BOS_ID, EOS_ID
from .translation import Hypothesis, token_batches


@dataclass
class Decoding:
    """Resolved settings: the search configuration, the batch budget, precision and device."""

    search: SearchConfig
    batch_tokens: int
    precision: str = "fp32"
    seed: int = 1
    device: torch.device = torch.device("cpu")
    warning: Optional[str] = None  # about the settings (bf16 where it is slow), for the user


def decoding_precision(requested: str, device: torch.device) -> tuple[str, Optional[str]]:
    """--precision checked and resolved (auto -> bf16 or fp32), with a warning for slow bf16."""
    check_choice("--precision", requested, DECODE_PRECISIONS)
    if requested == "int8":  # dynamic int8 linears: fbgemm kernels exist on CPU only
        if device.type != "cpu":
            raise UsageError(f"--precision int8 runs on the CPU only (device is {device.type}); "
                             "use --device cpu, or --precision fp32/bf16 on the GPU")
        return "int8", None
    precision, warning = resolve_precision(requested, device)
    return precision, warning and f"--precision {warning}"


def resolve_decoding(recipe_decode, opts: DecodeOptions, device: torch.device) -> Decoding:
    """The recipe's `decode` section with the command-line values laid over it."""
    chosen = lay_over(recipe_decode, opts)
    precision, warning = decoding_precision(opts.precision, device)
    batch_tokens = chosen.pop("batch_tokens")
    return Decoding(SearchConfig(**chosen), batch_tokens, precision, opts.seed, device, warning)


# --------------------------------------------------------------------------- rows of ids


def pad_rows(rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """[len(rows), longest] long tensor, rows padded on the right with pad_id."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def make_generator(decoding: Decoding) -> Optional[torch.Generator]:
    """The random source of --sample, seeded; None when searching."""
    if not decoding.search.sample:
        return None
    return torch.Generator(device=decoding.device).manual_seed(decoding.seed)


def translate_rows(model, rows: list[list[int]], decoding: Decoding,
                   generator: Optional[torch.Generator] = None,
                   workspace: Optional[Workspace] = None) -> list[list[Hypothesis]]:
    """Hypotheses for source id rows (each ending in </s>), batched by the token budget, in order.
    workspace: the key/value cache's memory, kept by the caller across calls (default: a new
    one, for all the batches of this call)."""
    results: list[list[Hypothesis]] = [[] for _ in rows]
    workspace = Workspace() if workspace is None else workspace
    for batch in token_batches([len(r) for r in rows], decoding.batch_tokens):
        src = pad_rows([rows[i] for i in batch], model.cfg.pad_id, decoding.device)
        with autocast(decoding.device, decoding.precision):
            if decoding.search.sample:
                hyps = sample(model, src, decoding.search, BOS_ID, EOS_ID, generator)
            else:
                hyps = beam_search(model, src, decoding.search, BOS_ID, EOS_ID, workspace=workspace)
        for i, h in zip(batch, hyps):
            results[i] = h
    return results
