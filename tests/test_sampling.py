"""Subword sampling in training only (BPE-dropout, sentencepiece sampling) and corpus tags as
tokens of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import make_corpus
from txcli.errors import UsageError
from txcli.schema.data import Sampling
from txcli.tokenizer import tag_id, train_tokenizer, training_encoder

SENTENCE = "the big green dog sleeps with the small red cat"


@pytest.fixture(scope="module")
def lines(tmp_path_factory) -> list[str]:
    src, tgt = make_corpus(tmp_path_factory.mktemp("corpus"), n=300)
    return src.read_text().splitlines() + tgt.read_text().splitlines()


@pytest.fixture(scope="module")
def bpe(lines):
    return train_tokenizer(iter(lines), "bpe", 200, min_frequency=1)


@pytest.fixture(scope="module")
def spm_tok(lines):
    return train_tokenizer(iter(lines), "sentencepiece", 80)


def _segmentations(encode, n: int = 12) -> set[tuple[int, ...]]:
    return {tuple(ids) for ids in encode([SENTENCE] * n)}


def test_bpe_dropout_segments_anew_and_the_deterministic_encoder_never_changes(bpe):
    before = bpe.encode(SENTENCE)
    assert len(before) <= len(SENTENCE.split()) * 2  # merges happen: there is something to drop
    sampled = training_encoder(bpe, Sampling(dropout=0.3))
    seen = _segmentations(sampled) | _segmentations(sampled)  # two calls: two "epochs"
    assert len(seen) > 1
    assert all(bpe.decode(list(ids)) == SENTENCE for ids in seen)  # the same text, cut differently
    assert max(len(ids) for ids in seen) > len(before)
    # the tokenizer itself (validation, tx translate) is untouched by the sampled copy
    assert _segmentations(bpe.encode_batch) == {tuple(before)} and bpe.encode(SENTENCE) == before
    assert bpe.hf.model.dropout is None
    assert training_encoder(bpe, None)([SENTENCE]) == [before]


def test_sentencepiece_sampling_segments_anew_and_leaves_encode_alone(spm_tok):
    before = spm_tok.encode(SENTENCE)
    sampling = Sampling(alpha=0.1)
    first = training_encoder(spm_tok, sampling, seed=7)([SENTENCE] * 12)
    assert len({tuple(ids) for ids in first}) > 1
    assert all(spm_tok.decode(ids) == SENTENCE for ids in first)
    assert _segmentations(spm_tok.encode_batch) == {tuple(before)}
    nbest = training_encoder(spm_tok, Sampling(alpha=0.1, nbest=2), seed=1)([SENTENCE] * 20)
    assert 1 <= len({tuple(ids) for ids in nbest}) <= 2  # sampled among the 2 best only


def test_the_wrong_sampling_for_a_tokenizer_is_one_line(bpe, spm_tok, lines):
    with pytest.raises(UsageError, match="data.sampling.alpha"):
        training_encoder(bpe, Sampling(alpha=0.1))
    with pytest.raises(UsageError, match="data.sampling.dropout"):
        training_encoder(spm_tok, Sampling(dropout=0.1))
    unigram = train_tokenizer(iter(lines), "unigram", 80)
    with pytest.raises(UsageError, match="data.sampling.dropout is BPE-dropout.*Unigram"):
        training_encoder(unigram, Sampling(dropout=0.1))


# --------------------------------------------------------------------------- tags

TWO_CORPORA = """\
name: tagged
run_dir: run
data:
  train:
    - {{name: clean, src: train.src, tgt: train.tgt, weight: 3}}
    - {{name: bt, src: train.src, tgt: train.tgt, tag: "<bt>"}}
    - {{name: also, src: train.src, tgt: train.tgt, tag: "<bt>"}}
  valid: {{src: train.src, tgt: train.tgt}}
tokenizer: {{kind: {kind}, vocab_size: 80, joint: {joint}, min_frequency: 1}}
model: {{d_model: 32, heads: 4, ff: 64, encoder_layers: 1, decoder_layers: 1}}
"""


def _tagged_recipe(tmp_path: Path, kind: str, joint: bool) -> Path:
    make_corpus(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(TWO_CORPORA.format(kind=kind, joint=str(joint).lower()))
    return path


@pytest.mark.parametrize("kind,joint", [("bpe", True), ("sentencepiece", True), ("unigram", False)])
def test_a_corpus_tag_is_one_token_in_text_and_decoding_drops_it(tmp_path: Path, kind, joint):
    from txcli.commands.run import corpus_tags, load_tokenizers, train_tokenizers
    from txcli.schema import load_recipe

    recipe = load_recipe(_tagged_recipe(tmp_path, kind, joint))
    assert corpus_tags(recipe) == ["<bt>"]
    train_tokenizers(recipe)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, joint)  # as tx translate loads them
    tag = tag_id(src_tok, "<bt>")
    plain = src_tok.encode("the dog sleeps")
    assert src_tok.encode("<bt> the dog sleeps") == [tag] + plain
    assert src_tok.encode_batch(["<bt> the dog sleeps", "the dog sleeps"]) == [[tag] + plain, plain]
    assert src_tok.decode([tag] + plain) == "the dog sleeps"
    assert src_tok.id_to_token(tag) == "<bt>"
    if kind != "sentencepiece":
        assert tag == 4  # right after tx's own specials
    with pytest.raises(UsageError, match="tag '<xx>'"):
        tag_id(src_tok, "<xx>")
    if not joint:  # tags go before source lines: the target vocabulary has none
        with pytest.raises(UsageError, match="tag '<bt>'"):
            tag_id(tgt_tok, "<bt>")


def test_translate_reads_a_tag_in_the_input_as_its_id(tmp_path: Path):
    from tests.conftest import make_tiny_run
    from txcli.commands.run import open_for_decoding
    from txcli.translation import encode_sources

    run_dir = make_tiny_run(_tagged_recipe(tmp_path, "bpe", True))
    run = open_for_decoding(run_dir, device="cpu")
    rows, _ = encode_sources(run.src_tok, ["<bt> the dog", "the dog"], max_len=32)
    assert rows[0] == [tag_id(run.src_tok, "<bt>")] + rows[1]


def test_a_tokenizer_without_the_tag_names_it(bpe):
    with pytest.raises(UsageError) as e:
        tag_id(bpe, "<bt>")
    assert "'<bt>'" in str(e.value) and "train-tokenizer" in str(e.value)


def test_sentencepiece_tags_survive_the_file_and_a_loaded_model(tmp_path: Path, spm_tok, lines):
    from txcli.sentencepiece_tokenizer import SentencePieceTokenizer, from_model

    tagged = from_model(spm_tok.models["src"], tags=["<bt>", "<ft>"])
    assert tagged.vocab_size == spm_tok.vocab_size + 2
    path = tmp_path / "tok.json"
    tagged.save(path)
    import json

    loaded = SentencePieceTokenizer.from_json(json.loads(path.read_text()))
    assert loaded.tags == ["<bt>", "<ft>"]
    ids = loaded.encode("<ft>the dog<bt>")
    assert ids[0] == loaded.tag_id("<ft>") and ids[-1] == loaded.tag_id("<bt>")
    assert loaded.decode(ids) == "the dog"
