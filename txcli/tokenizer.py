"""Subword tokenizers: train, save and load Hugging Face `tokenizers` models.

Every tokenizer reserves the same special ids, so the model and the search never ask which kind
of tokenizer they run on: <pad>=0, <unk>=1, <s>=2 (start), </s>=3 (stop). The tags of the
training corpora (data.train[].tag, e.g. <bt>) come next, as special tokens: a tag written in
the text is that one id, and decoding drops it.

Training may segment at random (data.sampling: `training_encoder`); validation, `tx translate`
and every other caller segment the one deterministic way (`encode`, `encode_batch`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from .errors import UsageError
from .special_tokens import BOS, BOS_ID, EOS, EOS_ID, PAD, PAD_ID, SPECIALS, UNK, UNK_ID  # noqa: F401 (the one place to import them from)

METASPACE = "\u2581"  # the word-start marker of Metaspace (BPE, unigram) pieces


class SubwordTokenizer:
    """A trained tokenizer: text <-> ids, without special tokens (the caller adds <s>, </s>)."""

    def __init__(self, hf: Tokenizer):
        for token, expected in zip(SPECIALS, range(4)):
            if hf.token_to_id(token) != expected:
                raise ValueError(f"tokenizer does not reserve {token} at id {expected}")
        self.hf = hf

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

    def tokens(self, text: str) -> list[str]:
        return self.hf.encode(text, add_special_tokens=False).tokens

    def decode(self, ids: Iterable[int]) -> str:
        return self.hf.decode([i for i in ids if i >= len(SPECIALS)], skip_special_tokens=True)

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        return self.hf.decode_batch([[i for i in ids if i >= len(SPECIALS)] for ids in batch])

    def id_to_token(self, i: int) -> str:
        return self.hf.id_to_token(i) or UNK

    def get_vocab(self) -> dict[str, int]:
        return self.hf.get_vocab()

    def save(self, path: Path) -> None:
        """Atomic write: a crash never leaves half a tokenizer behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        os.close(fd)
        try:
            self.hf.save(tmp)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: Path) -> "SubwordTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    def tag_id(self, tag: str) -> int:
        """A corpus tag's id: one of the special tokens the tokenizer was trained with."""
        specials = {t.content: i for i, t in self.hf.get_added_tokens_decoder().items() if t.special}
        if tag not in specials:
            raise UsageError(f"tag {tag!r}: the tokenizer has no token for it (it was trained without this tag; "
                             "train it again: tx train-tokenizer RECIPE --force, or use a new run_dir)")
        return specials[tag]

    def sampling_encoder(self, sampling, seed: Optional[int] = None) -> Callable[[list[str]], list[list[int]]]:
        """BPE-dropout (sampling.dropout): a copy of the tokenizer whose BPE model skips each merge
        with that chance, so every call segments anew. `tokenizers` draws from its own unseeded
        generator: seed is not used."""
        if sampling.alpha is not None:
            raise UsageError("data.sampling.alpha is sentencepiece sampling; this run's tokenizer is not "
                             "sentencepiece (a bpe tokenizer samples with data.sampling.dropout)")
        if not isinstance(self.hf.model, models.BPE):
            raise UsageError(f"data.sampling.dropout is BPE-dropout; this run's tokenizer is "
                             f"{type(self.hf.model).__name__}, not BPE")
        sampled = Tokenizer.from_str(self.hf.to_str())
        sampled.model.dropout = float(sampling.dropout)
        return lambda texts: [e.ids for e in sampled.encode_batch(texts, add_special_tokens=False)]


def training_encoder(tokenizer, sampling, seed: Optional[int] = None) -> Callable[[list[str]], list[list[int]]]:
    """How training encodes a list of texts: with data.sampling None the tokenizer's own
    deterministic encode_batch; else BPE-dropout (a bpe tokenizer) or sentencepiece sampling,
    a new segmentation each call. Validation and decoding never use it."""
    if sampling is None:
        return tokenizer.encode_batch
    return tokenizer.sampling_encoder(sampling, seed)


def tag_id(tokenizer, tag: str) -> int:
    """The tag's one id; UsageError naming the tag when the vocabulary lacks it."""
    return tokenizer.tag_id(tag)


def build_tokenizer(kind: str, vocab_size: int, min_frequency: int = 2, lowercase: bool = False,
                    tags: Sequence[str] = ()):
    """An untrained tokenizer and its trainer. Metaspace pre-tokenisation keeps spaces recoverable,
    so decode(encode(text)) gives the text back up to the normaliser. The tags become special
    tokens after tx's own (ids 4, 5, ...)."""
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    specials = SPECIALS + [t for t in dict.fromkeys(tags) if t not in SPECIALS]
    if kind == "bpe":
        hf = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials)
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    elif kind == "unigram":
        hf = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=UNK)
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    elif kind == "wordpiece":
        hf = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials)
        # split on whitespace only, so punctuation stays attached and decoding restores it exactly
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.decoder = decoders.WordPiece(cleanup=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    hf.normalizer = normalizers.Sequence(norm)
    return hf, trainer


def train_tokenizer(texts: Iterator[str], kind: str, vocab_size: int, min_frequency: int = 2,
                    lowercase: bool = False, tags: Sequence[str] = ()) -> SubwordTokenizer:
    """Train from an iterator of lines (streamed: the corpus need not fit in memory); `tags`
    (corpus tags) become tokens of their own."""
    if kind == "sentencepiece":  # its own library; min_frequency has no sentencepiece equivalent
        from .sentencepiece_tokenizer import train

        return train(texts, vocab_size, lowercase, tags)
    hf, trainer = build_tokenizer(kind, vocab_size, min_frequency, lowercase, tags)
    hf.train_from_iterator(texts, trainer=trainer)
    return SubwordTokenizer(hf)


def load_tokenizer(path: Path, side: str = "src"):
    """Any kind from its file: a tx sentencepiece file (sentencepiece_tokenizer) says so in its
    JSON; anything else is a `tokenizers` file. side: which of a two-model file's sentencepiece
    models segments this side's text (a one-model file has the same for both)."""
    import json

    text = Path(path).read_text(encoding="utf-8")
    if '"tx_tokenizer"' in text[:200]:
        from .sentencepiece_tokenizer import SentencePieceTokenizer

        return SentencePieceTokenizer.from_json(json.loads(text), side)
    return SubwordTokenizer(Tokenizer.from_str(text))
