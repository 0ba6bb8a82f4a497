"""Text to hypotheses through an engine, without torch: what both engines (torch and CTranslate2)
share, so that `tx translate --engine ctranslate2` starts without importing torch.

Source lines encoded into id rows, token-budget batches, the hypothesis an engine hands back, and
`translate_lines`, the one path from lines of text to hypotheses (translate, evaluate, bench).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .tokenizer import EOS_ID


@dataclass
class Hypothesis:
    """One output of either engine (search.py returns these too)."""

    tokens: list[int]  # output ids without <s> and </s>
    score: float  # what the search ranked by: logprob / length penalty
    logprob: float  # model log-probability of tokens + </s>


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
