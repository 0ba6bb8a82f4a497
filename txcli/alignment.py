"""Word alignments from cross-attention, several ways, and choosing one on gold alignments.

Every method reduces a sentence's cross-attention to word-level score matrices, one per
(layer, head): score[j, i] = the attention the decoder rows speaking for target word j give to the
subwords of source word i (specials left out). A method then sums some of those matrices and links
each target word to its best source word:

  predict   heads of one layer averaged, the row that predicts the word (row t-1 for token t);
            what `--align` always did (`--align-row output`)
  shift     the same with the row that reads the word as decoder input (row t, one step later:
            "shift-att", Chen et al. 2020); `--align-row input` was already exactly this
  layers    every head of every decoder layer averaged, predicting row
  bidir     `layers`, each score also weighted by its share of the source word's attention over
            all target words: a source word most of whose attention goes to one target word pulls
            the link there (bench/attention_aer.py compares it with the others)
  select    chosen on gold alignments (--align-select): single heads, layer means, the all-heads
            mean and greedily grown sets of heads, each with argmax or bidir links, scored on the
            first half of the sentences (rounded up); the AER on the other half is the honest one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from .attention import alignment_error_rate

METHODS = ("predict", "shift", "layers", "bidir")
RULES = ("argmax", "bidir")


@dataclass(frozen=True)
class Method:
    """What to sum and how to link: parts are (layer, head) pairs, head None = that layer's mean."""

    name: str
    row: str                                   # "output" (predicting row) or "input" (shift)
    parts: tuple[tuple[int, Optional[int]], ...]
    rule: str = "argmax"

    def describe(self) -> str:
        parts = ", ".join(f"layer {layer} " + ("mean" if head is None else f"head {head}") for layer, head in self.parts)
        return f"{self.name}: {parts}; {self.rule} links, {'predicting' if self.row == 'output' else 'reading'} row"


def standard_method(name: str, layer: int, layers: Sequence[int]) -> Method:
    """One of METHODS; `layer` is the layer predict/shift use, `layers` all decoder layers."""
    if name == "predict":
        return Method(name, "output", ((layer, None),))
    if name == "shift":
        return Method(name, "input", ((layer, None),))
    rule = "bidir" if name == "bidir" else "argmax"
    return Method(name, "output", tuple((layer, None) for layer in layers), rule)


def word_scores(cross: np.ndarray, src_words: list[Optional[int]], tgt_words: list[Optional[int]],
                row: str) -> np.ndarray:
    """[heads, target words, source words] from one layer's cross-attention [heads, T, S]."""
    n_src = 1 + max((w for w in src_words if w is not None), default=-1)
    n_tgt = 1 + max((w for w in tgt_words if w is not None), default=-1)
    to_src = np.zeros((cross.shape[2], n_src))
    for s, w in enumerate(src_words):
        if w is not None:
            to_src[s, w] = 1.0
    from_rows = np.zeros((n_tgt, cross.shape[1]))
    for t, j in enumerate(tgt_words):
        r = t - 1 if row == "output" else t
        if j is not None and 0 <= r < cross.shape[1]:
            from_rows[j, r] = 1.0
    return from_rows @ cross.astype(np.float64) @ to_src  # [j,t] @ [h,t,s] @ [s,i] broadcasts over heads


def links(scores: np.ndarray, rule: str = "argmax") -> list[tuple[int, int]]:
    """(source word, target word) links: each target word to its best source word."""
    if scores.size == 0:
        return []
    if rule == "bidir":
        scores = scores * scores / np.maximum(scores.sum(axis=0, keepdims=True), 1e-12)
    return sorted((int(np.argmax(scores[j])), j) for j in range(scores.shape[0]))


class SentenceScores:
    """Word score matrices of one sentence, per row kind and layer: [heads, tgt words, src words]."""

    def __init__(self, cross: dict[int, np.ndarray], src_words, tgt_words, rows: Iterable[str] = ("output", "input")):
        self.by = {(row, layer): word_scores(w, src_words, tgt_words, row) for row in rows for layer, w in cross.items()}

    @classmethod
    def of(cls, by: dict[tuple[str, int], np.ndarray]) -> "SentenceScores":
        """From word-level matrices already made: {(row, layer): [heads, tgt words, src words]}."""
        scores = cls.__new__(cls)
        scores.by = by
        return scores

    def combined(self, method: Method) -> np.ndarray:
        total = None
        for layer, head in method.parts:
            m = self.by[(method.row, layer)]
            m = m.mean(axis=0) if head is None else m[head]
            total = m if total is None else total + m
        return total

    def links(self, method: Method) -> list[tuple[int, int]]:
        return links(self.combined(method), method.rule)


def corpus_aer(sentences: Sequence[SentenceScores], method: Method, sure, possible, idx: Sequence[int]) -> float:
    return alignment_error_rate([sentences[i].links(method) for i in idx], [sure[i] for i in idx],
                                [possible[i] for i in idx])


def split(n: int) -> tuple[range, range]:
    """The --align-select protocol: tune on the first half (rounded up), report on the rest."""
    half = (n + 1) // 2
    return range(half), range(half, n)


def select_method(sentences: Sequence[SentenceScores], sure, possible, layers: Sequence[int], heads: int,
                  tune: Sequence[int]) -> tuple[Method, float]:
    """The method with the lowest AER on the `tune` sentences, and that AER. Candidates: every
    single head, every layer mean, the mean of all layers (predicting row, argmax or bidir links),
    then heads added one at a time to the best set while the tuning AER falls."""
    units = [(layer, h) for layer in layers for h in range(heads)]
    candidates = [Method("select", "output", (u,), rule) for u in units for rule in RULES]
    candidates += [Method("select", row, ((layer, None),), rule) for layer in layers
                   for row in ("output", "input") for rule in RULES]
    candidates += [Method("select", "output", tuple((layer, None) for layer in layers), rule) for rule in RULES]
    scored = [(corpus_aer(sentences, m, sure, possible, tune), k, m) for k, m in enumerate(candidates)]
    best_aer, _, best = min(scored)
    for rule in RULES:  # greedy sets of single heads
        chosen: list = []
        current = 1.0 + 1e-9
        while True:
            trials = [(corpus_aer(sentences, Method("select", "output", tuple(chosen + [u]), rule), sure, possible, tune), u)
                      for u in units if u not in chosen]
            if not trials:
                break
            aer, unit = min(trials)
            if aer >= current:
                break
            chosen.append(unit)
            current = aer
        if chosen and current < best_aer:
            best_aer, best = current, Method("select", "output", tuple(sorted(chosen)), rule)
    return best, best_aer
