"""Validation during training: loss and perplexity over the validation pairs, BLEU and chrF of
greedy output, and the stop rule (a target score reached, or early stopping's patience spent)."""

from __future__ import annotations

import math
from typing import Callable, Optional

import torch

from . import events
from .batching import EncodedPairs, eval_batches
from .loss import smoothed_loss_sum
from .precision import autocast
from .search import greedy_search
from .tokenizer import BOS_ID, EOS_ID, PAD_ID


class Validator:
    """Loss and perplexity over the validation pairs; BLEU and chrF (sacrebleu) of greedy output
    against the reference text."""

    def __init__(self, pairs: EncodedPairs, references: list[str], detokenize: Callable[[list[list[int]]], list[str]],
                 batch_tokens: int, max_len_a: float, max_len_b: int, max_sentences: Optional[int],
                 device: torch.device, precision: str = "fp32"):
        self.batches = eval_batches(pairs, batch_tokens)
        self.references = references
        self.detokenize = detokenize
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.size = len(pairs)
        self.decode_pairs = len(pairs) if max_sentences is None else min(max_sentences, len(pairs))
        self.device, self.precision = device, precision

    @torch.inference_mode()
    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        try:
            with autocast(self.device, self.precision):
                loss = self._loss(model)
                bleu, chrf = self._scores(model)
        finally:
            model.train(was_training)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bleu": bleu, "chrf": chrf}

    def _loss(self, model) -> float:
        total, tokens = 0.0, 0
        for _, batch in self.batches:
            b = batch.to(self.device)
            logits = model(b.src, b.tgt_in)
            total += float(smoothed_loss_sum(logits, b.tgt_out, 0.0))
            tokens += b.n_tgt_tokens
        return total / max(tokens, 1)

    def _scores(self, model) -> tuple[float, float]:
        import sacrebleu

        hyps: dict[int, list[int]] = {}
        max_positions = model.positions.size(0)
        for index, batch in self.batches:
            keep = index < self.decode_pairs
            if not keep.any():
                continue
            src = batch.src[torch.from_numpy(keep)]
            src = src[:, : int((src != PAD_ID).sum(1).max())].to(self.device)
            max_len = min(int(self.max_len_a * src.size(1) + self.max_len_b), max_positions - 1)
            for i, ids in zip(index[keep], greedy_search(model, src, max_len, BOS_ID, EOS_ID)):
                hyps[int(i)] = ids
        order = sorted(hyps)
        text = self.detokenize([hyps[i] for i in order])
        refs = [self.references[i] for i in order]
        # force: pre-tokenized references are fine here; without it sacrebleu warns on stderr
        return sacrebleu.corpus_bleu(text, [refs], force=True).score, sacrebleu.corpus_chrf(text, [refs]).score


def stop_reason(cfg, scores: dict, bad_validations: int) -> Optional[str]:
    """After a validation: "target" once cfg.stop_at's score is reached, "early_stop" after
    early_stop.patience validations without a new best, else None (go on to max_steps)."""
    target = cfg.stop_at
    if target is not None:
        score = scores[target.metric]
        if score >= target.value if events.HIGHER_IS_BETTER[target.metric] else score <= target.value:
            return "target"
    es = cfg.early_stop
    if es is not None and bad_validations >= es.patience:
        return "early_stop"
    return None
