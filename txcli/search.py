"""Decoding over the model's `encode` and `decode` only: beam search, greedy search and sampling.

Sentences start from <s> and stop at </s>. All three share one loop (`_decode`): every sentence
in the batch owns K rows (beams, or 1 row per sample), the decoder runs on all rows at once with
the key/value cache (the K rows of a sentence share one row of cross-attention keys/values), and
a *step function* picks each sentence's next K hypotheses from the K x V candidates. `beam_step`
is pure, so tests can drive it with made-up log-probabilities. Sentences that are done leave the
batch, so the work shrinks as they finish.

An `Ensemble` of models decodes in the same loop: each model keeps its own key/value cache, and
the next-token log-probability is the mean of the models' log-probabilities (a geometric mean of
their distributions, not renormalised), so `logprob` is that mean summed over the tokens.

Scores: `logprob` is the model's log-probability of the tokens and </s>; `score` divides it by the
GNMT length penalty ((5 + length) / 6) ** alpha (Wu et al., 2016), length counting </s>; the
search ranks finished hypotheses by `score`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .kv_cache import new_cache
from .model import Seq2SeqTransformer
from .options import search_problem
from .translation import Hypothesis  # torch-free: the ctranslate2 engine returns the same type

NEG_INF = float("-inf")


@dataclass
class SearchConfig:
    beam: int = 5  # hypotheses kept per sentence; 1 is greedy search
    nbest: int = 1  # hypotheses returned per sentence (with sampling: samples drawn)
    alpha: float = 0.6  # length penalty strength; 0 ranks by plain log-probability
    max_len_a: float = 1.2  # at most a * source_length + b output tokens (not counting </s>)
    max_len_b: int = 10
    min_len: int = 0  # </s> is forbidden before this many tokens
    no_repeat_ngram: int = 0  # n > 0: no n-gram appears twice in one output
    sample: bool = False  # draw tokens at random instead of searching
    temperature: float = 1.0
    top_k: int = 0  # sample among the k likeliest tokens only (0: all)
    top_p: float = 1.0  # sample within the smallest set holding this much probability

    def __post_init__(self):
        problem = search_problem(self.beam, self.nbest, self.sample, self.temperature, self.top_k, self.top_p)
        if problem:
            raise ValueError(problem)


def length_penalty(length, alpha: float):
    """GNMT length penalty ((5 + length) / 6) ** alpha; works on numbers and tensors alike."""
    return ((5 + length) / 6) ** alpha


def max_output_lengths(src: Tensor, pad_id: int, a: float, b: int, limit: int) -> Tensor:
    """Per sentence: floor(a * source_length + b) output tokens, at most `limit`."""
    src_len = (src != pad_id).sum(1).double()
    return (a * src_len + b).floor().long().clamp(0, limit)


# --------------------------------------------------------------------------- step functions


class Step(NamedTuple):
    """One step's choice for B sentences of K rows each.

    scores/tokens/origins [B,K]: the hypotheses kept alive (cumulative log-probability, new token,
    which of the sentence's K rows they extend); finished/finished_origins [B,K]: cumulative
    log-probability of hypotheses that end with </s> at this step (-inf: none) and their rows.
    """

    scores: Tensor
    tokens: Tensor
    origins: Tensor
    finished: Tensor
    finished_origins: Tensor


def beam_step(scores: Tensor, log_probs: Tensor, eos_id: int) -> Step:
    """The beam update. scores [B,K] cumulative log-probabilities of the live hypotheses (-inf for
    empty slots, e.g. beams 1..K-1 at the first step); log_probs [B,K,V] next-token log-probs.

    Ranks the extensions best first: </s> extensions within the best K finish a hypothesis; the
    best K others stay alive. Each row is cut to its K+1 best tokens before the scores are added,
    as a row holds at most one </s>: the overall best K are among the rows' best K, and the best K
    that are not </s> among the rows' best K+1. Of the K x (K+1) candidates the best 2K hold at
    most K </s>, so at least K go on.
    """
    B, K, V = log_probs.shape
    n = min(K + 1, V)
    row_best, row_tokens = log_probs.topk(n, dim=2)  # [B,K,n]
    total = (scores.unsqueeze(2) + row_best).view(B, K * n)
    top_scores, top_index = total.topk(min(2 * K, K * n), dim=1)  # sorted, best first
    origins, tokens = top_index // n, row_tokens.view(B, K * n).gather(1, top_index)
    is_eos = tokens == eos_id
    finished = top_scores[:, :K].masked_fill(~is_eos[:, :K], NEG_INF)
    # the first K candidates that are not </s>, keeping their order
    rank = torch.arange(top_index.size(1), device=scores.device)
    alive = (rank + is_eos * top_index.size(1)).topk(K, dim=1, largest=False).indices
    return Step(top_scores.gather(1, alive), tokens.gather(1, alive), origins.gather(1, alive),
                finished, origins[:, :K])


def stay_in_place(origins: Tensor) -> Tensor:
    """A slot order for the K new hypotheses of each sentence that moves the fewest rows.

    origins [B,K]: the row each new hypothesis extends. Which slot a hypothesis takes does not
    matter to the search, but every hypothesis not in its origin's slot has its key/value cache
    copied there. So the first hypothesis from each origin stays in that origin's slot, and the
    others fill the slots no hypothesis extends.
    Returns order [B,K]: slot j takes hypothesis order[:, j].
    """
    B, K = origins.shape
    same = origins.unsqueeze(2) == origins.unsqueeze(1)  # [B,K,K]
    earlier = torch.ones(K, K, dtype=torch.bool, device=origins.device).tril(-1)
    first = ~(same & earlier).any(2)  # no earlier hypothesis extends the same row
    extended = torch.zeros_like(first).scatter_(1, origins, True)  # slots some hypothesis extends
    free_slots = extended.byte().argsort(dim=1, stable=True)  # slots nobody extends, first
    others_rank = (~first).cumsum(1) - 1  # i-th hypothesis that cannot stay: i-th free slot
    slot = torch.where(first, origins, free_slots.gather(1, others_rank.clamp(min=0)))
    ranks = torch.arange(K, device=origins.device).expand(B, K)
    return torch.empty_like(origins).scatter_(1, slot, ranks)


def sample_step(scores: Tensor, log_probs: Tensor, eos_id: int, temperature: float = 1.0,
                top_k: int = 0, top_p: float = 1.0, generator: Optional[torch.Generator] = None) -> Step:
    """Draw one token per row (K is 1: samples of one sentence are separate sentences here).
    The draw uses the tempered, truncated distribution; scores stay model log-probabilities."""
    B, K, V = log_probs.shape
    logits = log_probs.view(B * K, V) / temperature
    if 0 < top_k < V:
        kth = logits.topk(top_k, dim=1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, NEG_INF)
    if top_p < 1.0:
        logits = _keep_top_p(logits, top_p)
    tokens = torch.multinomial(logits.softmax(-1), 1, generator=generator).view(B, K)
    new_scores = scores + log_probs.gather(2, tokens.unsqueeze(2)).squeeze(2)
    is_eos = tokens == eos_id
    origins = torch.arange(K, device=scores.device).expand(B, K)
    return Step(new_scores.masked_fill(is_eos, NEG_INF), tokens, origins,
                new_scores.masked_fill(~is_eos, NEG_INF), origins)


def _keep_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Nucleus filtering: keep the likeliest tokens whose probabilities sum to top_p (at least one)."""
    sorted_logits, order = logits.sort(dim=1, descending=True)
    probs = sorted_logits.softmax(-1)
    above = probs.cumsum(-1) - probs  # probability mass ranked above each token
    drop = torch.zeros_like(above, dtype=torch.bool).scatter(1, order, above >= top_p)
    return logits.masked_fill(drop, NEG_INF)


# --------------------------------------------------------------------------- constraints


def block_repeated_ngrams(log_probs: Tensor, history: Tensor, n: int) -> None:
    """In place: forbid every token that would repeat an n-gram already in the row's history.
    log_probs [N,V]; history [N,T] generated tokens (no <s>)."""
    T = history.size(1)
    if T < n:
        return
    grams = history.unfold(1, n, 1)  # [N, T-n+1, n]
    prefix = history[:, T - n + 1:]  # the last n-1 tokens: what a new n-gram would start with
    seen = (grams[:, :, :-1] == prefix.unsqueeze(1)).all(2)
    hits = torch.zeros_like(log_probs).scatter_add_(1, grams[:, :, -1], seen.to(log_probs.dtype))
    log_probs.masked_fill_(hits > 0, NEG_INF)


def _constrain(log_probs: Tensor, step: int, row_max_len: Tensor, cfg: SearchConfig,
               history: Tensor, specials: tuple[int, int, int], never: Tensor, first_limit: int) -> None:
    """In place: never <pad> or <s> (the ids in `never`); no </s> before min_len; only </s> at
    the maximum length (no row has reached it before step first_limit, the smallest of them);
    no repeated n-grams."""
    pad_id, bos_id, eos_id = specials
    log_probs.index_fill_(1, never, NEG_INF)
    if step < cfg.min_len:
        log_probs[:, eos_id].masked_fill_(row_max_len > step, NEG_INF)
    if cfg.no_repeat_ngram > 0:
        block_repeated_ngrams(log_probs, history, cfg.no_repeat_ngram)
    if step < first_limit:  # a step's small tensor ops cost more than their arithmetic: one check fewer
        return
    at_limit = row_max_len <= step
    if bool(at_limit.any()):
        eos = log_probs[:, eos_id].clone()
        log_probs.masked_fill_(at_limit.unsqueeze(1), NEG_INF)
        log_probs[:, eos_id] = eos


# --------------------------------------------------------------------------- decoders


class Workspace:
    """Memory for the self-attention key/value cache, kept from one batch to the next. A fresh
    cache of a large batch is faulted in 4 KiB at a time as decoding fills it, so with new memory
    every batch the writes into the cache pay for the page faults. Batches of one chunk need a
    little more or less than each other, so a new buffer gets headroom and the next batches fit."""

    HEADROOM = 1.3

    def __init__(self):
        self.storage: Optional[Tensor] = None
        self._parts: list["Workspace"] = []

    def part(self, i: int) -> "Workspace":
        """The workspace of an ensemble's i-th model (0: this one): each model's cache needs
        memory of its own."""
        if i == 0:
            return self
        while len(self._parts) < i:
            self._parts.append(Workspace())
        return self._parts[i - 1]

    def take(self, size: int, like: Tensor) -> Tensor:
        s = self.storage
        if s is None or s.numel() < size or s.dtype != like.dtype or s.device != like.device:
            self.storage = None  # let the old buffer go before the new one is made
            self.storage = s = like.new_empty(int(size * self.HEADROOM))
        return s


class _CachedDecoder:
    """Next-token log-probabilities from the key/value cache: one new position per step."""

    def __init__(self, model: Seq2SeqTransformer, memory: Tensor, src_pad: Tensor, capacity: int,
                 rows: int, workspace: Optional[Workspace]):
        self.model = model
        self.cache = new_cache(model, memory, src_pad, capacity, rows, workspace and workspace.take)

    def log_probs(self, history: Tensor, step: int) -> Tensor:
        # the cache holds the cross-attention keys/values: no memory argument needed
        logits = self.model.decode(history[:, step:step + 1], None, self.cache.src_pad_mask, self.cache)
        return F.log_softmax(logits[:, -1].float(), dim=-1)

    def select(self, rows: Tensor, sentences: Optional[Tensor]) -> None:
        """Rows of the decoder to keep, in order; the sentences they belong to (None: the same
        sentences as before, in the same order)."""
        if sentences is None:
            self.cache.select_beams(rows)
        else:
            self.cache.select(rows, sentences)


class _EnsembleDecoder:
    """One decoder per model, each with its own cache; the mean of their log-probabilities."""

    def __init__(self, decoders: list):
        self.decoders = decoders

    def log_probs(self, history: Tensor, step: int) -> Tensor:
        total = self.decoders[0].log_probs(history, step)
        for d in self.decoders[1:]:
            total += d.log_probs(history, step)  # each call returns a fresh tensor
        return total.div_(len(self.decoders))

    def select(self, rows: Tensor, sentences: Optional[Tensor]) -> None:
        for d in self.decoders:
            d.select(rows, sentences)


class Ensemble:
    """Several models that share the target vocabulary, decoded together (see the module
    docstring). `cfg` is the first model's: pad id and vocabulary are the same for all."""

    def __init__(self, models: list[Seq2SeqTransformer]):
        if not models:
            raise ValueError("an ensemble needs at least one model")
        if len({m.cfg.tgt_vocab_size for m in models}) > 1 or len({m.cfg.pad_id for m in models}) > 1:
            raise ValueError("the models of an ensemble must share the target vocabulary")
        self.models = list(models)
        self.cfg = models[0].cfg

    def __len__(self) -> int:
        return len(self.models)


def members(model) -> list[Seq2SeqTransformer]:
    """The models behind a model or an ensemble."""
    return list(model.models) if isinstance(model, Ensemble) else [model]


class _RecomputingDecoder:
    """The naive reference: recompute the whole prefix every step, no cache."""

    def __init__(self, model: Seq2SeqTransformer, memory: Tensor, src_pad: Tensor, capacity: int,
                 rows: int, workspace: Optional[Workspace]):
        self.model, self.memory, self.src_pad = model, memory, src_pad

    def log_probs(self, history: Tensor, step: int) -> Tensor:
        logits = self.model.decode(history[:, : step + 1], self.memory, self.src_pad)
        return F.log_softmax(logits[:, -1].float(), dim=-1)

    def select(self, rows: Tensor, sentences: Optional[Tensor]) -> None:
        if sentences is not None:
            self.memory = self.memory.index_select(0, sentences)
            self.src_pad = self.src_pad.index_select(0, sentences)


# --------------------------------------------------------------------------- the search loop


class _Finished:
    """Finished hypotheses of every sentence, and the score an alive one must beat to matter."""

    def __init__(self, n_sentences: int, nbest: int, alpha: float, device):
        self.hyps: list[list[Hypothesis]] = [[] for _ in range(n_sentences)]
        self.nbest, self.alpha = nbest, alpha
        self.count = torch.zeros(n_sentences, dtype=torch.long, device=device)
        self.bar = torch.full((n_sentences,), NEG_INF, device=device)  # nbest-th best score

    def add(self, sentences: list[int], rows: list[list[int]], logprobs: list[float], length: int) -> None:
        penalty = length_penalty(length, self.alpha)
        for s, tokens, logprob in zip(sentences, rows, logprobs):
            self.hyps[s].append(Hypothesis(tokens, logprob / penalty, logprob))
        changed = sorted(set(sentences))
        for s in changed:
            self.hyps[s].sort(key=lambda h: -h.score)  # stable: ties keep the order they came in
        # one indexed write per step: item by item cost more than the sentences' Python
        index = torch.tensor(changed, device=self.count.device)
        self.count[index] = torch.tensor([len(self.hyps[s]) for s in changed], device=index.device)
        self.bar[index] = torch.tensor([h[self.nbest - 1].score if len(h) >= self.nbest else NEG_INF
                                        for h in (self.hyps[s] for s in changed)], device=index.device)

    def best(self) -> list[list[Hypothesis]]:
        return [h[: self.nbest] for h in self.hyps]  # add() keeps each list best first


StepFn = Callable[[Tensor, Tensor, int], Step]


def _decode(model, src: Tensor, K: int, nbest: int, step_fn: StepFn,
            cfg: SearchConfig, bos_id: int, eos_id: int, use_cache: bool,
            workspace: Optional[Workspace] = None) -> list[list[Hypothesis]]:
    """The shared loop. src [B,S] padded; K rows per sentence; returns the best `nbest`
    finished hypotheses per sentence, best first."""
    models = members(model)
    device, pad_id = src.device, model.cfg.pad_id
    B = src.size(0)
    max_positions = min(m.cfg.max_positions for m in models)
    max_len = max_output_lengths(src, pad_id, cfg.max_len_a, cfg.max_len_b, max_positions - 1)
    capacity = int(max_len.max()) + 1  # the last step can only add </s>
    src_pad = src == pad_id
    expand = torch.arange(B, device=device).repeat_interleave(K)  # K rows per sentence
    Decoder = _CachedDecoder if use_cache else _RecomputingDecoder
    decoders = [Decoder(m, m.encode(src), src_pad, capacity, B * K, workspace and workspace.part(i))
                for i, m in enumerate(models)]
    decoder = decoders[0] if len(decoders) == 1 else _EnsembleDecoder(decoders)
    decoder.select(expand, torch.arange(B, device=device))  # the beams of a sentence share its memory

    sentences = torch.arange(B, device=device)  # original index of each sentence still decoding
    row_max_len = max_len[expand]
    scores = torch.full((B, K), NEG_INF, device=device)
    scores[:, 0] = 0.0  # one live hypothesis per sentence to start from
    history = torch.full((B * K, capacity + 1), pad_id, dtype=torch.long, device=device)
    history[:, 0] = bos_id
    finished = _Finished(B, nbest, cfg.alpha, device)
    worst_penalty = length_penalty(max_len.double() + 1, cfg.alpha).float()  # largest it can get
    never = torch.tensor([pad_id, bos_id], device=device)
    first_limit = int(max_len.min())
    # per sentence still decoding, in the order of `sentences`: indexed anew only when one leaves
    alive_max_len, alive_worst = max_len, worst_penalty

    for step in range(capacity):
        b = sentences.size(0)
        log_probs = decoder.log_probs(history, step)
        _constrain(log_probs, step, row_max_len, cfg, history[:, 1 : step + 1], (pad_id, bos_id, eos_id),
                   never, first_limit)
        choice = step_fn(scores, log_probs.view(b, K, -1), eos_id)

        ended = choice.finished > NEG_INF
        if bool(ended.any()):
            at, beam = ended.nonzero(as_tuple=True)
            rows = at * K + choice.finished_origins[at, beam]
            finished.add(sentences[at].tolist(), history[rows, 1 : step + 1].tolist(),
                         choice.finished[at, beam].tolist(), step + 1)

        # done: K finished, the maximum length reached, or no live hypothesis can still beat
        # the nbest-th finished one (log-probabilities only fall; the penalty is at most worst_penalty)
        hope = choice.scores[:, 0] / alive_worst
        done = ((finished.count[sentences] >= K) | (alive_max_len <= step)
                | (hope <= finished.bar[sentences]))
        # most steps end no sentence: then the sentences keep their places and nothing is indexed
        keep = _keep_order(done) if bool(done.any()) else None
        if keep is None:
            scores, tokens, origins = choice.scores, choice.tokens, choice.origins
        elif keep.numel() == 0:
            break
        else:
            scores, tokens, origins = choice.scores[keep], choice.tokens[keep], choice.origins[keep]
            sentences, alive_max_len, alive_worst = sentences[keep], alive_max_len[keep], alive_worst[keep]
        if K > 1:  # fewer key/value cache rows to copy (the beams' order does not matter)
            order = stay_in_place(origins)
            scores, tokens, origins = scores.gather(1, order), tokens.gather(1, order), origins.gather(1, order)
        if keep is not None or K > 1:  # else every row goes on in place
            rows = (origins + K * torch.arange(b, device=device).unsqueeze(1) if keep is None
                    else keep.unsqueeze(1) * K + origins).view(-1)
            decoder.select(rows, keep)
            history = history.index_select(0, rows)
            row_max_len = row_max_len.index_select(0, rows)
        history[:, step + 1] = tokens.view(-1)
    return finished.best()


def _keep_order(done: Tensor) -> Tensor:
    """The sentences not done, in the order they take next step: those among the first n_kept
    slots stay where they are and the last ones move into the holes, so finished sentences leave
    at the cost of copying only the rows that fill their places."""
    kept = (~done).nonzero().squeeze(1)
    n = kept.numel()
    order = torch.arange(n, device=done.device)
    order[done[:n].nonzero().squeeze(1)] = kept[kept >= n]
    return order


# --------------------------------------------------------------------------- entry points


@torch.inference_mode()
def beam_search(model, src: Tensor, cfg: SearchConfig, bos_id: int, eos_id: int,
                use_cache: bool = True, workspace: Optional[Workspace] = None) -> list[list[Hypothesis]]:
    """Batched beam search (beam 1: greedy) with a model or an Ensemble. src [B,S] padded with pad_id. Returns per sentence
    the best cfg.nbest hypotheses, best first. use_cache=False recomputes every prefix (slow;
    the reference the cache is checked against). A workspace lends its memory to the cache
    (one per sequence of batches)."""
    return _decode(model, src, cfg.beam, cfg.nbest, beam_step, cfg, bos_id, eos_id, use_cache, workspace)


@torch.inference_mode()
def sample(model, src: Tensor, cfg: SearchConfig, bos_id: int, eos_id: int,
           generator: Optional[torch.Generator] = None) -> list[list[Hypothesis]]:
    """cfg.nbest independent samples per sentence, ranked by score."""
    n = cfg.nbest

    def step_fn(scores, log_probs, eos):
        return sample_step(scores, log_probs, eos, cfg.temperature, cfg.top_k, cfg.top_p, generator)

    draws = _decode(model, src.repeat_interleave(n, 0), 1, 1, step_fn, cfg, bos_id, eos_id, True)
    return [sorted((h for d in draws[i * n:(i + 1) * n] for h in d), key=lambda h: -h.score)
            for i in range(src.size(0))]


def greedy_search(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int) -> list[list[int]]:
    """Batched greedy decoding with the key/value cache. src [B,S] (padded with pad_id).
    Returns, per sentence, the output ids without <s> and </s> (at most max_len of them)."""
    cfg = SearchConfig(beam=1, alpha=0.0, max_len_a=0.0, max_len_b=max_len)
    return [hyps[0].tokens if hyps else [] for hyps in beam_search(model, src, cfg, bos_id, eos_id)]
