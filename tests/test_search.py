"""Search: the pure beam step on made-up log-probabilities, then the whole search on a tiny model
against naive references (greedy and beam search) that decode one sentence at a time, one
hypothesis at a time, recomputing the whole prefix every step: no cache, no batching, no code
shared with search.py's loop."""

from __future__ import annotations

import math

import pytest
import torch

from txcli.model import ModelConfig, Seq2SeqTransformer
from txcli.search import (NEG_INF, SearchConfig, Workspace, beam_search, beam_step, block_repeated_ngrams,
                          greedy_search, length_penalty, sample, sample_step, stay_in_place)
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID

V = 12
pytestmark = pytest.mark.usefixtures("one_thread")


def lp(*rows):
    """Log-probabilities [1,K,V] from {token: probability} dicts (the rest shares what is left)."""
    out = torch.empty(1, len(rows), V)
    for k, probs in enumerate(rows):
        rest = (1 - sum(probs.values())) / (V - len(probs))
        out[0, k] = math.log(rest) if rest > 0 else NEG_INF
        for token, p in probs.items():
            out[0, k, token] = math.log(p)
    return out


# --------------------------------------------------------------------------- the pure step


def test_first_step_expands_only_the_live_beam():
    scores = torch.tensor([[0.0, NEG_INF]])
    step = beam_step(scores, lp({5: 0.5, 6: 0.3}, {7: 0.9}), EOS_ID)
    assert step.tokens.tolist() == [[5, 6]] and step.origins.tolist() == [[0, 0]]
    assert torch.allclose(step.scores, torch.tensor([[math.log(0.5), math.log(0.3)]]))
    assert (step.finished == NEG_INF).all()


def test_eos_in_the_top_k_finishes_and_the_next_candidate_stays_alive():
    scores = torch.tensor([[math.log(0.6), math.log(0.4)]])
    step = beam_step(scores, lp({EOS_ID: 0.7, 5: 0.2}, {6: 0.9}), EOS_ID)
    # candidates: 0.42 </s> (beam 0), 0.36 tok 6 (beam 1), 0.12 tok 5 (beam 0)
    assert step.finished[0, 0].item() == pytest.approx(math.log(0.42))
    assert step.finished_origins[0, 0].item() == 0 and step.finished[0, 1].item() == NEG_INF
    assert step.tokens.tolist() == [[6, 5]] and step.origins.tolist() == [[1, 0]]
    assert step.scores[0].tolist() == pytest.approx([math.log(0.36), math.log(0.12)])


def test_eos_outside_the_top_k_finishes_nothing():
    scores = torch.tensor([[math.log(0.5), math.log(0.5)]])
    step = beam_step(scores, lp({5: 0.5, 6: 0.4, EOS_ID: 0.05}, {7: 0.5, 8: 0.4}), EOS_ID)
    assert (step.finished == NEG_INF).all()
    assert sorted(step.tokens[0].tolist()) == [5, 7]


def exhaustive_step(scores, log_probs, eos_id):
    """The beam update by its definition: rank all K x V extensions; </s> ones within the best K
    finish, the best K others go on."""
    B, K, V = log_probs.shape
    finished, alive = [], []
    for b in range(B):
        cands = sorted(((scores[b, k] + log_probs[b, k, v]).item(), k, v) for k in range(K) for v in range(V))[::-1]
        finished.append(sorted(s for s, k, v in cands[:K] if v == eos_id)[::-1])
        alive.append([(s, k, v) for s, k, v in cands if v != eos_id][:K])
    return finished, alive


def test_beam_step_matches_ranking_every_extension():
    """Cutting each row to its K+1 best first loses nothing: random scores, log-probs with </s>
    often near the top, beams 1 to 6."""
    gen = torch.Generator().manual_seed(0)
    for K in range(1, 7):
        for _ in range(5):
            scores = torch.randn(3, K, generator=gen)
            log_probs = torch.randn(3, K, V, generator=gen).log_softmax(-1)
            log_probs[:, :, EOS_ID] += 2 * torch.rand(3, K, generator=gen)  # </s> often among the best
            step = beam_step(scores, log_probs, EOS_ID)
            finished, alive = exhaustive_step(scores, log_probs, EOS_ID)
            for b in range(3):
                got = sorted(step.finished[b][step.finished[b] > NEG_INF].tolist())[::-1]
                assert got == pytest.approx(finished[b])
                assert step.scores[b].tolist() == pytest.approx([s for s, _, _ in alive[b]])
                assert list(zip(step.origins[b].tolist(), step.tokens[b].tolist())) == [(k, v) for _, k, v in alive[b]]


def test_stay_in_place_moves_only_rows_that_must_move():
    origins = torch.tensor([[0, 0, 1, 3], [2, 2, 2, 2], [3, 2, 1, 0], [1, 1, 0, 0]])
    order = stay_in_place(origins)
    assert sorted(order[0].tolist()) == [0, 1, 2, 3]  # a permutation of each sentence's hypotheses
    assert (order.sort(1).values == torch.arange(4)).all()
    settled = origins.gather(1, order)
    # each origin used keeps one hypothesis in its own slot; the others fill the unused slots
    assert settled.tolist() == [[0, 1, 0, 3], [2, 2, 2, 2], [0, 1, 2, 3], [0, 1, 1, 0]]
    # the first hypothesis from each origin is the one that stays (it ranks best among them)
    assert order[0].tolist() == [0, 2, 1, 3] and order[1, 2].item() == 0 and order[3].tolist() == [2, 0, 1, 3]
    moved = (settled != torch.arange(4)).sum(1)
    assert moved.tolist() == [1, 3, 0, 2]  # K minus the number of distinct origins


def test_beam_finds_what_greedy_misses():
    """Greedy takes 5 (0.6) and then can only go on with 0.32; the beam keeps 6 (0.4), whose
    continuation is all but certain: 0.4 * 0.99 > 0.6 * 0.32 * 0.99."""
    table = {(): {5: 0.6, 6: 0.4}, (5,): {7: 0.32, 8: 0.3, 9: 0.28}, (6,): {EOS_ID: 0.99},
             (5, 7): {EOS_ID: 0.99}, (5, 8): {EOS_ID: 0.99}, (5, 9): {EOS_ID: 0.99}}

    def run(K):
        scores = torch.full((1, K), NEG_INF)
        scores[0, 0] = 0.0
        prefixes, done = [()] * K, []
        for _ in range(3):
            step = beam_step(scores, lp(*[table.get(p, {EOS_ID: 0.99}) for p in prefixes]), EOS_ID)
            for j in range(K):
                if step.finished[0, j] > NEG_INF:
                    done.append((step.finished[0, j].item(), prefixes[step.finished_origins[0, j]]))
            prefixes = [prefixes[o] + (t,) for o, t in zip(step.origins[0].tolist(), step.tokens[0].tolist())]
            scores = step.scores
        return max(done)

    assert run(1)[1] == (5, 7) and run(2)[1] == (6,)
    assert run(2)[0] == pytest.approx(math.log(0.4 * 0.99))


def test_sample_step_scores_with_the_model_and_top_k_one_is_argmax():
    log_probs = lp({5: 0.5, 6: 0.3}).expand(4, 1, V).contiguous()
    scores = torch.zeros(4, 1)
    step = sample_step(scores, log_probs, EOS_ID, temperature=0.7, top_k=1)
    assert step.tokens.view(-1).tolist() == [5] * 4
    assert step.scores.view(-1).tolist() == pytest.approx([math.log(0.5)] * 4)
    nucleus = sample_step(scores, log_probs, EOS_ID, top_p=0.45, generator=torch.Generator().manual_seed(0))
    assert nucleus.tokens.view(-1).tolist() == [5] * 4
    wide = [sample_step(scores, log_probs, EOS_ID, top_p=0.8, generator=torch.Generator().manual_seed(s))
            for s in range(20)]
    assert {t for w in wide for t in w.tokens.view(-1).tolist()} == {5, 6}


def test_repeated_ngrams_are_blocked():
    log_probs = torch.zeros(2, V)
    history = torch.tensor([[5, 6, 7, 5, 6], [5, 6, 7, 8, 9]])
    block_repeated_ngrams(log_probs, history, 3)
    assert (log_probs[0] == NEG_INF).nonzero().view(-1).tolist() == [7]  # "5 6 7" again
    assert not (log_probs[1] == NEG_INF).any()
    block_repeated_ngrams(log_probs, history, 1)  # unigrams: nothing seen may come back
    assert (log_probs[1] == NEG_INF).nonzero().view(-1).tolist() == [5, 6, 7, 8, 9]


def test_length_penalty_is_gnmt():
    assert length_penalty(1, 0.6) == 1.0
    assert length_penalty(10, 0.6) == pytest.approx((15 / 6) ** 0.6)
    assert length_penalty(10, 0.0) == 1.0


# --------------------------------------------------------------------------- the whole search


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = ModelConfig(src_vocab_size=40, tgt_vocab_size=40, d_model=32, heads=4, ff=64, encoder_layers=2,
                      decoder_layers=2, dropout=0.0, share_embeddings=True)
    return Seq2SeqTransformer(cfg).eval()


def sources(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(4, 40, (int(torch.randint(1, 14, (1,), generator=g)),), generator=g).tolist() + [EOS_ID]
            for _ in range(n)]


def padded(rows):
    S = max(map(len, rows))
    return torch.tensor([r + [PAD_ID] * (S - len(r)) for r in rows])


def naive_greedy(model, src, max_len):
    """Recompute the whole prefix every step, one sentence, argmax over everything but <pad>/<s>."""
    x = torch.tensor([src])
    memory, out = model.encode(x), [BOS_ID]
    for _ in range(max_len):
        scores = model.decode(torch.tensor([out]), memory, x == PAD_ID)[0, -1]
        scores[[PAD_ID, BOS_ID]] = NEG_INF
        token = int(scores.argmax())
        if token == EOS_ID:
            break
        out.append(token)
    return out[1:]


def teacher_forced_logprob(model, src, tokens):
    tgt_in = torch.tensor([[BOS_ID] + tokens])
    log_probs = model(torch.tensor([src]), tgt_in)[0].float().log_softmax(-1)
    return log_probs.gather(1, torch.tensor([tokens + [EOS_ID]]).T).sum().item()


@torch.inference_mode()
def test_beam_one_is_exactly_greedy(model):
    rows = sources(12)
    expected = [naive_greedy(model, r, 15) for r in rows]
    assert greedy_search(model, padded(rows), 15, BOS_ID, EOS_ID) == expected
    cfg = SearchConfig(beam=1, alpha=0.6, max_len_a=0.0, max_len_b=15)
    assert [h[0].tokens for h in beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)] == expected


def same(a, b):
    """Equal hypotheses per sentence: the same number of sentences and of hypotheses, the same
    tokens, scores equal within rounding. Never true of empty results: every sentence must have
    at least one hypothesis (decoding that returns nothing is not "the same")."""
    if not a or not all(a) or not all(b):
        return False
    return len(a) == len(b) and all(
        len(x) == len(y) and [h.tokens for h in x] == [h.tokens for h in y]
        and all(h.score == pytest.approx(k.score, abs=1e-4) for h, k in zip(x, y)) for x, y in zip(a, b))


def banned_by_ngrams(tokens: list[int], n: int) -> set[int]:
    """The tokens that would repeat an n-gram of `tokens` if they came next."""
    if n <= 0 or len(tokens) < n:
        return set()
    tail = tokens[len(tokens) - n + 1:]
    return {tokens[i + n - 1] for i in range(len(tokens) - n + 1) if tokens[i:i + n - 1] == tail}


def naive_beam(model, src: list[int], cfg: SearchConfig) -> list[tuple[list[int], float, float]]:
    """Beam search by its definition, for one sentence: each step extends every live hypothesis by
    every token (the decoder run on its whole prefix, alone), ranks all extensions; those ending
    in </s> among the best K finish, the best K others go on. Stops when K have finished or at
    the length limit, where only </s> is allowed. Returns the best nbest as (tokens, score,
    logprob), ranked by logprob / GNMT penalty (length counting </s>), earlier finishes first on
    a tie."""
    K = cfg.beam
    x = torch.tensor([src])
    memory, pad = model.encode(x), x == PAD_ID
    max_len = min(math.floor(cfg.max_len_a * len(src) + cfg.max_len_b), model.cfg.max_positions - 1)
    live, finished = [([], 0.0)], []
    for step in range(max_len + 1):
        candidates = []
        for tokens, logprob in live:
            logits = model.decode(torch.tensor([[BOS_ID] + tokens]), memory, pad)[0, -1]
            log_probs = logits.float().log_softmax(-1).tolist()
            allowed = set(range(len(log_probs))) - {PAD_ID, BOS_ID} - banned_by_ngrams(tokens, cfg.no_repeat_ngram)
            if step < cfg.min_len and step < max_len:
                allowed.discard(EOS_ID)
            if step == max_len:
                allowed = {EOS_ID}
            candidates += [(logprob + log_probs[v], tokens, v) for v in allowed]
        candidates.sort(key=lambda c: -c[0])
        for logprob, tokens, v in candidates[:K]:
            if v == EOS_ID:
                finished.append((tokens, logprob / length_penalty(len(tokens) + 1, cfg.alpha), logprob))
        live = [(tokens + [v], logprob) for logprob, tokens, v in candidates if v != EOS_ID][:K]
        if len(finished) >= K or not live:
            break
    return sorted(finished, key=lambda h: -h[1])[:cfg.nbest]


@pytest.fixture(scope="module")
def sharp_model(model):
    """The tiny model with its weights doubled: sharper distributions, so outputs run long (the
    initial model mostly ends at once) and beams part ways."""
    sharp = Seq2SeqTransformer(model.cfg).eval()
    with torch.no_grad():
        for mine, theirs in zip(sharp.parameters(), model.parameters()):
            mine.copy_(theirs * 2.0)
    return sharp


@torch.inference_mode()
@pytest.mark.parametrize("which", ["model", "sharp_model"])
@pytest.mark.parametrize("cfg", [
    SearchConfig(beam=4, nbest=4, alpha=0.6, max_len_a=1.0, max_len_b=4),
    SearchConfig(beam=5, nbest=3, alpha=1.0, max_len_a=1.2, max_len_b=3, no_repeat_ngram=2),
    SearchConfig(beam=3, nbest=1, alpha=0.0, max_len_a=0.5, max_len_b=4, min_len=3),
    SearchConfig(beam=6, nbest=1, alpha=1.5, max_len_a=1.0, max_len_b=5),
    SearchConfig(beam=8, nbest=2, alpha=0.0, max_len_a=1.0, max_len_b=5),
    SearchConfig(beam=2, nbest=2, alpha=0.6, max_len_a=0.0, max_len_b=2),
], ids=["nbest4", "ngram-alpha1", "minlen-alpha0", "long-alpha1.5", "wide-alpha0", "short"])
def test_beam_search_matches_the_naive_beam(request, which, cfg):
    """The batched, cached search with its early stop gives, for every sentence of a mixed batch,
    the hypotheses (tokens, score and log-probability, n-best included) of the naive beam search."""
    model = request.getfixturevalue(which)
    rows = sources(10, seed=13)
    got = beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)
    assert len(got) == len(rows)
    for r, hyps in zip(rows, got):
        expected = naive_beam(model, r, cfg)
        assert len(expected) == cfg.nbest
        assert [h.tokens for h in hyps] == [e[0] for e in expected]
        assert [h.score for h in hyps] == pytest.approx([e[1] for e in expected], abs=1e-4)
        assert [h.logprob for h in hyps] == pytest.approx([e[2] for e in expected], abs=1e-4)


@torch.inference_mode()
def test_cached_decoding_matches_recomputing_from_scratch(model):
    rows = sources(8)
    cfg = SearchConfig(beam=4, nbest=4, alpha=0.6, max_len_a=1.0, max_len_b=4, no_repeat_ngram=2)
    cached = beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)
    recomputed = beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID, use_cache=False)
    assert same(cached, recomputed)


@torch.inference_mode()
def test_a_workspace_reused_across_batches_changes_nothing(model):
    """Batches that decode into one reused buffer give what fresh buffers give, even when a
    smaller batch follows a larger one and finds the larger one's keys and values there."""
    cfg = SearchConfig(beam=3, nbest=2, alpha=0.6, max_len_a=1.0, max_len_b=4)
    batches = [sources(9, seed=5), sources(4, seed=6), sources(7, seed=7)]
    workspace = Workspace()
    pointers = []
    for rows in batches:
        reused = beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID, workspace=workspace)
        pointers.append(workspace.storage.data_ptr())
        assert same(reused, beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID))
    assert pointers[1] == pointers[0]  # the smaller batch decoded in the first one's memory


@torch.inference_mode()
def test_a_sentence_alone_decodes_as_in_a_mixed_batch(model):
    rows = sources(10, seed=3)
    cfg = SearchConfig(beam=5, nbest=3, alpha=0.6, max_len_a=1.2, max_len_b=5)
    batch = beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)
    alone = [beam_search(model, torch.tensor([r]), cfg, BOS_ID, EOS_ID)[0] for r in rows]
    assert same(batch, alone)


@torch.inference_mode()
def test_larger_beams_never_score_lower_without_length_penalty(model):
    rows = sources(30, seed=5)
    best = {}
    for K in (1, 2, 4, 8):
        cfg = SearchConfig(beam=K, alpha=0.0, max_len_a=1.0, max_len_b=5)
        best[K] = [h[0].score for h in beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)]
    for K in (2, 4, 8):
        assert all(b >= g - 1e-5 for b, g in zip(best[K], best[1])), K
    assert sum(best[8]) > sum(best[1])  # and it does find better ones


@torch.inference_mode()
def test_hypotheses_respect_lengths_ngrams_and_carry_true_scores(model):
    rows = sources(10, seed=7)
    cfg = SearchConfig(beam=4, nbest=4, alpha=0.6, max_len_a=1.0, max_len_b=3, min_len=2, no_repeat_ngram=2)
    for r, hyps in zip(rows, beam_search(model, padded(rows), cfg, BOS_ID, EOS_ID)):
        assert len(hyps) == 4 and [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 4
        for h in hyps:
            assert 2 <= len(h.tokens) <= len(r) + 3
            bigrams = list(zip(h.tokens, h.tokens[1:]))
            assert len(bigrams) == len(set(bigrams))
            assert h.logprob == pytest.approx(teacher_forced_logprob(model, r, h.tokens), abs=1e-4)
            assert h.score == pytest.approx(h.logprob / length_penalty(len(h.tokens) + 1, 0.6))


@torch.inference_mode()
def test_sampling_is_reproducible_and_top_k_one_is_greedy(model):
    rows = sources(6, seed=9)
    cfg = SearchConfig(sample=True, nbest=3, temperature=1.5, max_len_a=1.0, max_len_b=5)
    a = sample(model, padded(rows), cfg, BOS_ID, EOS_ID, torch.Generator().manual_seed(4))
    b = sample(model, padded(rows), cfg, BOS_ID, EOS_ID, torch.Generator().manual_seed(4))
    assert same(a, b) and all(len(h) == 3 for h in a)
    for r, hyps in zip(rows, a):
        for h in hyps:
            assert h.logprob == pytest.approx(teacher_forced_logprob(model, r, h.tokens), abs=1e-4)
    greedy = SearchConfig(sample=True, top_k=1, max_len_a=0.0, max_len_b=15)
    got = sample(model, padded(rows), greedy, BOS_ID, EOS_ID, torch.Generator().manual_seed(0))
    assert [h[0].tokens for h in got] == [naive_greedy(model, r, 15) for r in rows]


def test_config_rejects_nonsense():
    with pytest.raises(ValueError, match="nbest"):
        SearchConfig(beam=2, nbest=3)
    with pytest.raises(ValueError, match="temperature"):
        SearchConfig(sample=True, temperature=0)


@torch.inference_mode()
def test_beams_sharing_one_memory_row_decode_as_with_copies(model):
    """Cross-attention with one memory row per sentence for its G beams gives the same logits
    and attention weights as a copy of the memory per beam."""
    rows = sources(3, seed=11)
    src = padded(rows)
    memory, pad = model.encode(src), src == PAD_ID
    G = 4
    tgt = torch.randint(4, 40, (3 * G, 5), generator=torch.Generator().manual_seed(0))
    per_beam = torch.arange(3).repeat_interleave(G)
    shared, w_shared = model.decode_with_weights(tgt, memory, pad)
    copied, w_copied = model.decode_with_weights(tgt, memory[per_beam], pad[per_beam])
    assert torch.allclose(shared, copied, atol=1e-5)
    for a, b in zip(w_shared["cross"], w_copied["cross"]):
        assert a.shape == b.shape == (3 * G, 4, 5, src.size(1)) and torch.allclose(a, b, atol=1e-6)
