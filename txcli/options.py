"""Decoding settings and rows of ids without torch: what both engines (torch and CTranslate2)
share, so that `tx translate --engine ctranslate2` starts without importing torch.

The command-line options laid over a recipe's `decode` section, source lines encoded into id
rows, token-budget batches, and the hypothesis an engine hands back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import UsageError
from .tokenizer import EOS_ID


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


@dataclass
class Hypothesis:
    """One output of either engine (search.py returns these too)."""

    tokens: list[int]  # output ids without <s> and </s>
    score: float  # what the search ranked by: logprob / length penalty
    logprob: float  # model log-probability of tokens + </s>


# the smallest value each option takes, and the flag that names it in messages
_LOWER_BOUNDS = {"beam": 1, "batch_tokens": 1, "nbest": 1, "min_len": 0, "no_repeat_ngram": 0,
                 "max_len_b": 0, "max_len_a": 0, "alpha": 0, "top_k": 0}
RECIPE_KEYS = ("beam", "alpha", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram", "batch_tokens")
SEARCH_EXTRA = ("nbest", "sample", "temperature", "top_k", "top_p")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def lay_over(recipe_decode, opts: DecodeOptions) -> dict:
    """The recipe's `decode` values with the command-line ones laid over them, checked: every
    RECIPE_KEYS and SEARCH_EXTRA name -> value."""
    for name, low in _LOWER_BOUNDS.items():
        value = getattr(opts, name)
        if value is not None and value < low:
            raise UsageError(f"{flag(name)} {value}: must be at least {low}")
    chosen = {k: getattr(recipe_decode, k) if getattr(opts, k) is None else getattr(opts, k) for k in RECIPE_KEYS}
    chosen.update({k: getattr(opts, k) for k in SEARCH_EXTRA})
    problem = None
    if not chosen["sample"] and chosen["nbest"] > chosen["beam"]:
        problem = f"nbest ({chosen['nbest']}) cannot exceed the beam size ({chosen['beam']})"
    elif chosen["temperature"] <= 0 or not 0 < chosen["top_p"] <= 1:
        problem = "sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0"
    if problem:
        raise UsageError(f"decoding options: {problem} (--beam, --nbest, --temperature, --top-p)")
    return chosen


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


def translate_lines(engine, texts: list[str], max_len: int) -> tuple[list[list[Hypothesis]], int]:
    """Hypotheses per line of text through an engine (none for a blank line), and how many lines
    were truncated. `engine` has src_tok and translate_rows(rows)."""
    rows, truncated = encode_sources(engine.src_tok, texts, max_len)
    todo = [i for i, r in enumerate(rows) if r is not None]
    hyps: list[list[Hypothesis]] = [[] for _ in rows]
    if todo:
        for i, h in zip(todo, engine.translate_rows([rows[i] for i in todo])):
            hyps[i] = h
    return hyps, truncated
