"""word_ids.WordIds gives exactly the ids of the tokenizer's encode_batch, on text made to tell
them apart (spaces of every kind, the "▁" mark in the input, text NFKC changes, added tokens
inside words, case), on random text, after its word memory is emptied, and declines the
tokenizers whose pipeline it does not reproduce."""

from __future__ import annotations

import random

import numpy as np
import pytest

from txcli.corpus_encoder import flat_encoder, flat_encoders
from txcli.tokenizer import SubwordTokenizer, train_tokenizer
from txcli.word_ids import WordIds

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich, sagte sie!",
    "naïve café — 3.14 + 2 = 5.14 (roughly) ΣΊΣΥΦΟΣ İstanbul",
    "der Hund sieht die Katze; the dog sees the cat",
] * 30

HARD = [
    "hello world",
    "  two leading spaces",
    "trailing spaces  ",
    "three   spaces inside",
    " ",
    "   ",
    "tab\tinside\tand\ttrailing\t",
    "a line\nbreak (a JSONL value may hold one) über",
    "the \u2581mark in the input",
    "\u2581\u2581starts with marks",
    "ends with a mark\u2581",
    "no-break\u00a0space and ideographic\u3000space",
    "\ufb01ligature and ＦＵＬＬＷＩＤＴＨ and ¼ and ²",
    "Zwölf Boxkämpfer über Straße",
    "ΣΊΣΥΦΟΣ İSTANBUL final sigma ΟΔΟΣ",
    "e\u0301 combining and \u212b angstrom",
    "über: ends with an e",
    "\u0301 starts with a combining accent (the text before ends with e: normalized apart)",
    "<s> a special at the start",
    "a special </s> inside",
    "glued<bt>tag",
    "<bt> the tag",
    "<b t> not a tag",
    "unknown ☃ characters 𝔘𝔫𝔦",
    "x" * 600,
    "word " * 50,
    "",
    "a",
]


def tokenizer(lowercase: bool = False, kind: str = "bpe") -> SubwordTokenizer:
    return train_tokenizer(iter(CORPUS), kind, vocab_size=150, min_frequency=1, lowercase=lowercase, tags=["<bt>"])


def expected(tok: SubwordTokenizer, texts: list[str]) -> tuple[list[int], list[int]]:
    ids = tok.encode_batch(texts)
    return [len(i) for i in ids], [i for one in ids for i in one]


def check(word_ids: WordIds, tok: SubwordTokenizer, texts: list[str]) -> None:
    lengths, flat = word_ids(texts)
    assert lengths.dtype == np.int64 and flat.dtype == np.int32
    want_len, want_ids = expected(tok, texts)
    for i, text in enumerate(texts):  # name the first text that differs
        start = int(lengths[:i].sum())
        got = flat[start:start + lengths[i]].tolist()
        want = want_ids[sum(want_len[:i]):sum(want_len[:i + 1])]
        assert got == want, f"text {i} {text!r}: {got} != {want}"
    assert lengths.tolist() == want_len and flat.tolist() == want_ids


@pytest.mark.parametrize("lowercase", [False, True])
def test_the_ids_of_encode_batch_on_hard_text(lowercase: bool):
    tok = tokenizer(lowercase)
    word_ids = WordIds.of(tok)
    assert word_ids is not None
    check(word_ids, tok, HARD)
    check(word_ids, tok, HARD[::-1])  # now from words it remembers
    check(word_ids, tok, CORPUS[:8])
    check(word_ids, tok, [])


def test_random_text():
    tok = tokenizer()
    word_ids = WordIds.of(tok)
    rng = random.Random(3)
    alphabet = list("abcdefghij     ABCäöüßΣς") + ["\u2581", "\u00a0", "\ufb01", "<s>", "<bt>", "<", ">", "\t", "e\u0301"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30))) for _ in range(3000)]
    check(word_ids, tok, texts)


def test_a_normalizer_tx_does_not_train_with():
    """Every text is normalized by the tokenizer itself, and a word that the tokenizer does not
    give back as one unchanged piece (here each gets an "x" put in front) is asked of the model."""
    from tokenizers import normalizers

    tok = tokenizer()
    tok.hf.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Prepend("x"),
                                              normalizers.Replace("q", "k")])
    word_ids = WordIds.of(tok)
    assert word_ids is not None and not word_ids.ascii_known
    check(word_ids, tok, HARD)
    check(word_ids, tok, CORPUS[:8])


def test_the_same_ids_after_forgetting():
    tok = tokenizer()
    word_ids = WordIds.of(tok, max_words=5)
    for start in range(0, len(HARD), 4):
        check(word_ids, tok, HARD[start:start + 4] + CORPUS[:3])
        assert len(word_ids.index) <= 5 + 60  # emptied before a call once over the bound


def test_declined_where_the_pipeline_differs():
    for kind in ("unigram", "wordpiece"):
        assert WordIds.of(tokenizer(kind=kind)) is None
    tok = tokenizer()
    dropout = SubwordTokenizer(tok.hf.from_str(tok.hf.to_str()))
    dropout.hf.model.dropout = 0.1
    assert WordIds.of(dropout) is None
    truncated = SubwordTokenizer(tok.hf.from_str(tok.hf.to_str()))
    truncated.hf.enable_truncation(5)
    assert WordIds.of(truncated) is None
    # the fallback: the tokenizer's own batch call, made flat
    lengths, flat = flat_encoder(truncated)(["the quick brown fox jumps over the lazy dog"])
    assert lengths.tolist() == [5] and len(flat) == 5


def test_one_encoder_for_a_joint_vocabulary():
    tok = tokenizer()
    again = SubwordTokenizer(tok.hf.from_str(tok.hf.to_str()))
    src, tgt = flat_encoders(tok, again)
    assert src is tgt and isinstance(src, WordIds)
    src, tgt = flat_encoders(tok, tokenizer(lowercase=True))
    assert src is not tgt
