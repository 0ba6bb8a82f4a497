"""Subword tokenizers: train, save and load Hugging Face `tokenizers` models.

Every tokenizer reserves the same special ids, so the model and the search never ask which kind
of tokenizer they run on: <pad>=0, <unk>=1, <s>=2 (start), </s>=3 (stop).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

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


def build_tokenizer(kind: str, vocab_size: int, min_frequency: int = 2, lowercase: bool = False):
    """An untrained tokenizer and its trainer. Metaspace pre-tokenisation keeps spaces recoverable,
    so decode(encode(text)) gives the text back up to the normaliser."""
    norm = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    if kind == "bpe":
        hf = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS)
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    elif kind == "unigram":
        hf = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, unk_token=UNK)
        hf.pre_tokenizer = pre_tokenizers.Metaspace()
        hf.decoder = decoders.Metaspace()
    elif kind == "wordpiece":
        hf = Tokenizer(models.WordPiece(unk_token=UNK))
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIALS)
        # split on whitespace only, so punctuation stays attached and decoding restores it exactly
        hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        hf.decoder = decoders.WordPiece(cleanup=False)
    else:
        raise ValueError(f"unknown tokenizer kind {kind!r}")
    hf.normalizer = normalizers.Sequence(norm)
    return hf, trainer


def train_tokenizer(texts: Iterator[str], kind: str, vocab_size: int, min_frequency: int = 2,
                    lowercase: bool = False) -> SubwordTokenizer:
    """Train from an iterator of lines (streamed: the corpus need not fit in memory)."""
    if kind == "sentencepiece":  # its own library; min_frequency has no sentencepiece equivalent
        from .sentencepiece_tokenizer import train

        return train(texts, vocab_size, lowercase)
    hf, trainer = build_tokenizer(kind, vocab_size, min_frequency, lowercase)
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
