"""What every command that runs the model on text shares (translate, score, evaluate,
attention-dump): the decoding settings resolved against a recipe's `decode` section, source
encoding, token-budget batches, padding, the precision context, and translating id rows.

Knows nothing of files or the terminal: rows of token ids in, hypotheses out.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from .errors import UsageError
from .options import (DecodeOptions, RECIPE_KEYS, check_choice, encode_sources, flag,  # noqa: F401 (re-exported)
                      lay_over, token_batches)
from .precision import resolve_precision
from .search import Hypothesis, SearchConfig, Workspace, beam_search, sample
from .tokenizer import BOS_ID, EOS_ID

PRECISIONS = ("auto", "fp32", "bf16", "int8")  # int8: dynamic int8 linears (txcli/quantize.py), CPU only


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
    check_choice("--precision", requested, PRECISIONS)
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
    try:
        search = SearchConfig(**chosen)
    except ValueError as err:
        raise UsageError(f"decoding options: {err} (--beam, --nbest, --temperature, --top-p)") from None
    return Decoding(search, batch_tokens, precision, opts.seed, device, warning)


# --------------------------------------------------------------------------- rows of ids


def pad_rows(rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    """[len(rows), longest] long tensor, rows padded on the right with pad_id."""
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def precision_context(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_generator(decoding: Decoding) -> Optional[torch.Generator]:
    """The random source of --sample, seeded; None when searching."""
    if not decoding.search.sample:
        return None
    return torch.Generator(device=decoding.device).manual_seed(decoding.seed)


def translate_rows(model, rows: list[list[int]], decoding: Decoding,
                   generator: Optional[torch.Generator] = None) -> list[list[Hypothesis]]:
    """Hypotheses for source id rows (each ending in </s>), batched by the token budget, in order."""
    results: list[list[Hypothesis]] = [[] for _ in rows]
    workspace = Workspace()  # one key/value cache buffer for all the batches
    for batch in token_batches([len(r) for r in rows], decoding.batch_tokens):
        src = pad_rows([rows[i] for i in batch], model.cfg.pad_id, decoding.device)
        with precision_context(decoding.precision, decoding.device):
            if decoding.search.sample:
                hyps = sample(model, src, decoding.search, BOS_ID, EOS_ID, generator)
            else:
                hyps = beam_search(model, src, decoding.search, BOS_ID, EOS_ID, workspace=workspace)
        for i, h in zip(batch, hyps):
            results[i] = h
    return results


def translate_texts(model, src_tok, texts: list[str], decoding: Decoding, max_len: int,
                    generator: Optional[torch.Generator] = None) -> tuple[list[list[Hypothesis]], int]:
    """Hypotheses per line of text (none for a blank line), and how many lines were truncated."""
    rows, truncated = encode_sources(src_tok, texts, max_len)
    todo = [i for i, r in enumerate(rows) if r is not None]
    hyps: list[list[Hypothesis]] = [[] for _ in rows]
    for i, h in zip(todo, translate_rows(model, [rows[i] for i in todo], decoding, generator)):
        hyps[i] = h
    return hyps, truncated
