"""Ensembles: several models in one beam search, the mean of their log-probabilities per step."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from txcli.checkpoint import MODEL_FILE
from txcli.commands.run import open_for_decoding, open_run
from txcli.commands.score import token_logprobs
from txcli.errors import UsageError
from txcli.model import ModelConfig, Seq2SeqTransformer
from txcli.search import Ensemble, SearchConfig, beam_search
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID

from .conftest import TINY_RECIPE, make_corpus, make_tiny_run, run_tx

pytestmark = pytest.mark.usefixtures("one_thread")
V = 24


def tiny_model(seed: int) -> Seq2SeqTransformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(src_vocab_size=V, tgt_vocab_size=V, d_model=16, heads=2, ff=32, encoder_layers=1,
                      decoder_layers=2, dropout=0.0, max_positions=64, pad_id=PAD_ID)
    model = Seq2SeqTransformer(cfg).eval()
    with torch.no_grad():  # sharper distributions than the initial ones: searches differ more
        for p in model.parameters():
            p.mul_(2.0)
    return model


def sources() -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    src = torch.randint(4, V, (5, 7), generator=g)
    src[1, 5:] = PAD_ID
    src[3, 3:] = PAD_ID
    src[torch.arange(5), torch.tensor([6, 4, 6, 2, 6])] = EOS_ID
    return src


def search(model, beam=3, nbest=1, use_cache=True):
    cfg = SearchConfig(beam=beam, nbest=nbest, alpha=0.6, max_len_a=1.0, max_len_b=4)
    return beam_search(model, sources(), cfg, BOS_ID, EOS_ID, use_cache=use_cache)


def as_tuples(result):
    return [[(h.tokens, h.score, h.logprob) for h in hyps] for hyps in result]


@pytest.mark.parametrize("beam,nbest", [(1, 1), (3, 3)])
def test_an_ensemble_of_one_and_of_a_model_with_itself_equal_the_model(beam, nbest):
    model = tiny_model(1)
    alone = as_tuples(search(model, beam, nbest))
    assert as_tuples(search(Ensemble([model]), beam, nbest)) == alone
    assert as_tuples(search(Ensemble([model, model]), beam, nbest)) == alone  # (a + a) / 2 is exact


def test_two_models_greedy_takes_the_argmax_of_the_mean_log_probability():
    a, b = tiny_model(1), tiny_model(2)
    together = search(Ensemble([a, b]), beam=1)
    tokens = [hyps[0].tokens for hyps in together]
    assert tokens != [hyps[0].tokens for hyps in search(a, beam=1)]  # the mean is neither model alone:
    assert tokens != [hyps[0].tokens for hyps in search(b, beam=1)]  # both take part in every choice
    src = sources()
    with torch.no_grad():
        for i, hyps in enumerate(together):
            out = hyps[0].tokens + [EOS_ID]
            tgt_in = torch.tensor([[BOS_ID] + out[:-1]])
            mean = sum(m(src[i:i + 1], tgt_in).float().log_softmax(-1) for m in (a, b))[0] / 2
            mean[:, [PAD_ID, BOS_ID]] = float("-inf")  # what the search never emits
            limit = 1.0 * int((src[i] != PAD_ID).sum()) + 4
            for t, token in enumerate(out):
                if t < limit:  # at the length limit only </s> is allowed
                    assert int(mean[t].argmax()) == token
            assert hyps[0].logprob == pytest.approx(float(mean[torch.arange(len(out)), out].sum()), abs=1e-4)


def test_each_model_keeps_its_own_cache_through_beam_moves():
    ensemble = Ensemble([tiny_model(1), tiny_model(2), tiny_model(3)])
    cached = search(ensemble, beam=4, nbest=4)
    reference = search(ensemble, beam=4, nbest=4, use_cache=False)  # recomputes every prefix
    assert len(cached) == 5 and all(len(h) == 4 for h in cached)
    for c, r in zip(cached, reference):
        assert [h.tokens for h in c] == [h.tokens for h in r]
        assert [h.score for h in c] == pytest.approx([h.score for h in r], abs=1e-4)
        assert [h.score for h in c] == sorted((h.score for h in c), reverse=True)


# --------------------------------------------------------------------------- runs


def second_run(tmp_path: Path, name: str, vocab: int = 64, seed: int = 5) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    make_corpus(folder)
    recipe = folder / "recipe.yaml"
    recipe.write_text(TINY_RECIPE.format(kind="bpe", joint="true").replace("vocab_size: 64", f"vocab_size: {vocab}"))
    torch.manual_seed(seed)
    run = make_tiny_run(recipe)
    # make_tiny_run seeds 0: give this run other weights
    model = open_run(run, device="cpu").model
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    from txcli.checkpoint import save_model

    save_model(run / MODEL_FILE, model, model.cfg.to_dict())
    return run


def test_score_of_an_ensemble_is_the_mean_of_the_models_scores(tiny_run: Path, tmp_path: Path):
    other = second_run(tmp_path, "b")
    a, b, both = open_run(tiny_run, "cpu"), open_run(other, "cpu"), open_for_decoding([tiny_run, other], "cpu")
    pairs = [(a.src_tok.encode("the dog sees a cat") + [EOS_ID], a.tgt_tok.encode("CAT A SEES DOG THE"))]
    la, lb, lboth = (token_logprobs(r, pairs, 1000)[0] for r in (a, b, both))
    assert lboth == pytest.approx([(x + y) / 2 for x, y in zip(la, lb)], abs=1e-5)
    assert la != pytest.approx(lb)


def test_translate_with_two_runs_and_a_checkpoint_dir(tiny_run: Path, tmp_path: Path):
    other = second_run(tmp_path, "b")
    step = other / "checkpoints" / "step-000010"
    step.mkdir(parents=True)
    shutil.copy(other / MODEL_FILE, step / "model.safetensors")
    text = "the dog sees a cat\n\nbig red house\n"
    r = run_tx("translate", str(tiny_run), str(step), "--nbest", "2", "--format", "jsonl", input=text)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3
    r2 = run_tx("translate", str(tiny_run), str(other), "--nbest", "2", "--format", "jsonl", input=text)
    assert r2.stdout == r.stdout  # the checkpoint holds the same weights as the run's model
    data = tmp_path / "b"
    r3 = run_tx("evaluate", str(tiny_run), str(step), "--src", str(data / "train.src"), "--ref",
                str(data / "train.tgt"), "--max-len-b", "3", "--beam", "1", "--json")
    assert r3.returncode == 0, r3.stderr
    assert '"sentences": 200' in r3.stdout


def test_runs_with_other_vocabularies_are_refused(tiny_run: Path, tmp_path: Path):
    other = second_run(tmp_path, "b", vocab=48)
    with pytest.raises(UsageError, match="vocabulary differs"):
        open_for_decoding([tiny_run, other], "cpu")
    r = run_tx("translate", str(tiny_run), str(other), input="the dog\n")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "vocabulary differs" in r.stderr
    r = run_tx("score", str(tiny_run), str(other), "--src", str(tmp_path / "b" / "train.src"),
               "--tgt", str(tmp_path / "b" / "train.tgt"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
