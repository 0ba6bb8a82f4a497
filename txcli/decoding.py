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
from .precision import resolve_precision
from .search import Hypothesis, SearchConfig, Workspace, beam_search, sample
from .tokenizer import BOS_ID, EOS_ID

PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class DecodeOptions:
    """What the user asked for on top of the recipe's `decode` section (None: the recipe's value)."""

    beam: Optional[int] = None
    alpha: Optional[float] = None
    max_len_a: Optional[float] = None
    max_len_b: Optional[int] = None
    min_len: Optional[int] = None
    no_repeat_ngram: Optional[int] = None
    batch_tokens: Optional[int] = None
    nbest: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 1
    precision: str = "fp32"


# the smallest value each option takes, and the flag that names it in messages
_LOWER_BOUNDS = {"beam": 1, "batch_tokens": 1, "nbest": 1, "min_len": 0, "no_repeat_ngram": 0,
                 "max_len_b": 0, "max_len_a": 0, "alpha": 0, "top_k": 0}
RECIPE_KEYS = ("beam", "alpha", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram", "batch_tokens")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass
class Decoding:
    """Resolved settings: the search configuration, the batch budget, precision and device."""

    search: SearchConfig
    batch_tokens: int
    precision: str = "fp32"
    seed: int = 1
    device: torch.device = torch.device("cpu")
    warning: Optional[str] = None  # about the settings (bf16 where it is slow), for the user


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def decoding_precision(requested: str, device: torch.device) -> tuple[str, Optional[str]]:
    """--precision checked and resolved (auto -> bf16 or fp32), with a warning for slow bf16."""
    check_choice("--precision", requested, PRECISIONS)
    precision, warning = resolve_precision(requested, device)
    return precision, warning and f"--precision {warning}"


def resolve_decoding(recipe_decode, opts: DecodeOptions, device: torch.device) -> Decoding:
    """The recipe's `decode` section with the command-line values laid over it."""
    for name, low in _LOWER_BOUNDS.items():
        value = getattr(opts, name)
        if value is not None and value < low:
            raise UsageError(f"{flag(name)} {value}: must be at least {low}")
    precision, warning = decoding_precision(opts.precision, device)
    chosen = {k: getattr(recipe_decode, k) if getattr(opts, k) is None else getattr(opts, k) for k in RECIPE_KEYS}
    batch_tokens = chosen.pop("batch_tokens")
    extra = {k: getattr(opts, k) for k in ("nbest", "sample", "temperature", "top_k", "top_p")}
    try:
        search = SearchConfig(**chosen, **extra)
    except ValueError as err:
        raise UsageError(f"decoding options: {err} (--beam, --nbest, --temperature, --top-p)") from None
    return Decoding(search, batch_tokens, precision, opts.seed, device, warning)


# --------------------------------------------------------------------------- rows of ids


def encode_sources(tok, texts: list[str], max_len: int) -> tuple[list[Optional[list[int]]], int]:
    """Source ids + </s> per line, None for an empty or blank line (not translated). Lines longer
    than max_len subwords are cut to max_len; returns how many were."""
    todo = [i for i, t in enumerate(texts) if t.strip()]
    rows: list[Optional[list[int]]] = [None] * len(texts)
    truncated = 0
    for i, ids in zip(todo, tok.encode_batch([texts[i] for i in todo])):
        truncated += len(ids) > max_len
        rows[i] = ids[:max_len] + [EOS_ID]
    return rows, truncated


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut so that sentences x longest <= batch_tokens
    (a single sentence over the budget still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


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
