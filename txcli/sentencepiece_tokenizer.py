"""Sentencepiece tokenizers: trained by tx, loaded from an existing `.model`, or imported with a
Marian model (source.spm / target.spm and vocab.json), in which case text is segmented exactly as
transformers' MarianTokenizer does it.

Ids are tx's (tokenizer.SPECIALS at 0..3), not the sentencepiece model's: the file keeps the
vocabulary in tx id order and a piece -> id table. Segmentation is the sentencepiece model's own
(its normaliser included); pieces it produces that the table lacks (characters the model never
saw) become <unk>, as MarianTokenizer does.

Corpus tags (data.train[].tag) are tx's, not the model's: appended to the vocabulary after the
model's pieces and matched literally in the text before sentencepiece segments the rest, so a
loaded `.model` gets them as a trained one does; decoding drops them. Training may sample
segmentations (data.sampling.alpha, nbest: `sampling_encoder`); everything else segments the one
best way.

One JSON file per tokenizer, at the path the other kinds use (tokenizer.json, src_/tgt_tokenizer.json),
so copying a run's tokenizer (train.init_from, the CTranslate2 export) works unchanged. A file may
hold two sentencepiece models over one vocabulary, one per side: Marian's shared vocabularies
segment the source with source.spm and the target with target.spm.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import sentencepiece as spm

from .errors import UsageError
from .special_tokens import EOS, PAD, SPECIALS, UNK, UNK_ID

FORMAT = "sentencepiece"  # the file's "tx_tokenizer" value
SIDES = ("src", "tgt")
SPIECE_UNDERLINE = "\u2581"


class SentencePieceTokenizer:
    """text <-> tx ids through one sentencepiece model, without special tokens (the caller adds
    <s>, </s>). `marian`: MarianTokenizer's rules on top: the text is split at the special tokens
    written literally (</s>, <unk>, <pad>: their ids, as added tokens are), and a segment starting
    with a `>>xxx<<` language code gives that code as one token before its pieces. `tags`: corpus
    tags, each in `lookup`, matched anywhere in the text as one id."""

    def __init__(self, models: dict[str, bytes], side: str, vocab: list[str], lookup: dict[str, int],
                 marian: bool = False, tags: Sequence[str] = ()):
        if side not in models:
            raise ValueError(f"no sentencepiece model for side {side!r}")
        if list(vocab[:4]) != SPECIALS:
            raise ValueError(f"the vocabulary must start with {SPECIALS}")
        if any(not 0 <= i < len(vocab) for i in lookup.values()):
            raise ValueError("the piece table names ids outside the vocabulary")
        if any(t not in lookup for t in tags):
            raise ValueError("every tag needs an id in the piece table")
        self.models, self.side, self.vocab, self.lookup, self.marian = models, side, list(vocab), dict(lookup), marian
        self.tags = list(tags)
        self.tag_ids = {lookup[t] for t in self.tags}
        self.sp = spm.SentencePieceProcessor(model_proto=models[side])
        self.sp_pieces = [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]
        # MarianTokenizer's added tokens and the tags: matched anywhere in the text, longest first
        self.specials = ([t for t in (EOS, UNK, PAD) if t in lookup] if marian else []) + self.tags
        self.special_re = re.compile("|".join(re.escape(t) for t in sorted(self.specials, key=len, reverse=True))) \
            if self.specials else None

    # ----------------------------------------------------------------------- encoding

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokens(self, text: str, sample: Optional[dict] = None) -> list[str]:
        """The pieces (and literal special tokens, tags, language codes) text is cut into;
        `sample`: sentencepiece's sampling arguments (training only)."""
        if self.special_re is None:
            return self.sp.encode(text, out_type=str, **(sample or {}))
        out: list[str] = []
        at = 0
        for match in self.special_re.finditer(text):
            out += self._segment(text[at:match.start()], sample)
            out.append(match.group())
            at = match.end()
        return out + self._segment(text[at:], sample)

    def _segment(self, text: str, sample: Optional[dict]) -> list[str]:
        if not text:
            return []
        code = []
        if self.marian and text.startswith(">>") and (end := text.find("<<")) != -1:  # MarianTokenizer.remove_language_code
            code, text = [text[: end + 2]], text[end + 2:]
        return code + self.sp.encode(text, out_type=str, **(sample or {}))

    def encode(self, text: str, sample: Optional[dict] = None) -> list[int]:
        get = self.lookup.get
        return [get(piece, UNK_ID) for piece in self.tokens(text, sample)]

    def encode_batch(self, texts: list[str], sample: Optional[dict] = None) -> list[list[int]]:
        search = self.special_re.search if self.special_re is not None else None
        if not self.marian and (search is None or not any(map(search, texts))):  # one call into sentencepiece for all
            get = self.lookup.get
            return [[get(p, UNK_ID) for p in pieces]
                    for pieces in self.sp.encode(list(texts), out_type=str, **(sample or {}))]
        return [self.encode(t, sample) for t in texts]

    def sampling_encoder(self, sampling, seed: Optional[int] = None) -> Callable[[list[str]], list[list[int]]]:
        """Sentencepiece sampling (sampling.alpha, sampling.nbest): every call segments anew.
        seed, when given, seeds sentencepiece's generator (one for the whole process); the samples
        are still not reproducible call to call (the library's threads draw from generators of
        their own), so a resumed run sees new segmentations."""
        if sampling.dropout is not None:
            raise UsageError("data.sampling.dropout is BPE-dropout; this run's tokenizer is sentencepiece "
                             "(it samples with data.sampling.alpha)")
        if seed is not None:
            spm.set_random_generator_seed(int(seed) % 2**32)
        sample = {"enable_sampling": True, "alpha": float(sampling.alpha), "nbest_size": int(sampling.nbest)}
        return lambda texts: self.encode_batch(texts, sample)

    def tag_id(self, tag: str) -> int:
        """A corpus tag's id (it must be one of this tokenizer's tags)."""
        if tag not in self.tags:
            raise UsageError(f"tag {tag!r}: the tokenizer has no token for it (it was made without this tag; "
                             "make it again: tx train-tokenizer RECIPE --force, or use a new run_dir)")
        return self.lookup[tag]

    # ----------------------------------------------------------------------- decoding

    def decode(self, ids: Iterable[int]) -> str:
        """As MarianTokenizer.decode(skip_special_tokens=True): the pieces joined by sentencepiece,
        any word boundary it leaves (pieces it does not know) a space, the ends stripped."""
        pieces = [self.vocab[i] for i in ids if len(SPECIALS) <= i < len(self.vocab) and i not in self.tag_ids]
        return self.sp.decode_pieces(pieces).replace(SPIECE_UNDERLINE, " ").strip()

    def decode_batch(self, batch: list[list[int]]) -> list[str]:
        return [self.decode(ids) for ids in batch]

    def id_to_token(self, i: int) -> str:
        return self.vocab[i] if 0 <= i < len(self.vocab) else UNK

    def get_vocab(self) -> dict[str, int]:
        """token -> id for every id (the CTranslate2 engine maps its output tokens back)."""
        return {token: i for i, token in enumerate(self.vocab)}

    def language_codes(self) -> list[str]:
        """The `>>xxx<<` target-language tokens the vocabulary has (multilingual Marian models)."""
        return sorted(p for p in self.lookup if p.startswith(">>") and p.endswith("<<"))

    # ----------------------------------------------------------------------- files

    def to_json(self) -> dict:
        models = {side: base64.b64encode(m).decode("ascii") for side, m in self.models.items()}
        stored = {"model": models["src"]} if len(set(models.values())) == 1 else {"models": models}
        return {"tx_tokenizer": FORMAT, "version": 1, **stored, "marian": self.marian,
                "vocab": self.vocab, "lookup": self.lookup, **({"tags": self.tags} if self.tags else {})}

    def save(self, path: Path) -> None:
        """Atomic write: a crash never leaves half a tokenizer behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(self.to_json(), f, ensure_ascii=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def from_json(cls, data: dict, side: str = "src") -> "SentencePieceTokenizer":
        """From to_json's dict (ValueError, KeyError or TypeError when damaged)."""
        if data.get("tx_tokenizer") != FORMAT or data.get("version") != 1:
            raise ValueError("not a tx sentencepiece tokenizer (version 1)")
        if "model" in data:
            models = {s: base64.b64decode(data["model"], validate=True) for s in SIDES}
        else:
            models = {s: base64.b64decode(data["models"][s], validate=True) for s in SIDES}
        lookup = data["lookup"]
        if not isinstance(lookup, dict) or not all(isinstance(v, int) for v in lookup.values()):
            raise ValueError("lookup must map pieces to ids")
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError("tags must be a list of strings")
        return cls(models, side, data["vocab"], lookup, bool(data.get("marian", False)), tags)


def is_sentencepiece_file(data) -> bool:
    return isinstance(data, dict) and data.get("tx_tokenizer") == FORMAT


def from_model(model: bytes, other_side: Optional[bytes] = None, tags: Sequence[str] = ()) -> SentencePieceTokenizer:
    """A tokenizer over an existing sentencepiece model (a `.model` file's bytes): tx's specials at
    0..3, then the model's ordinary pieces in its order (its own control and unknown pieces are
    tx's specials already), then the tags. A model trained by tx (train below) keeps its ids."""
    sp = spm.SentencePieceProcessor(model_proto=model)
    vocab = list(SPECIALS)
    lookup = {}
    for i in range(sp.get_piece_size()):
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            continue
        piece = sp.id_to_piece(i)
        if piece in SPECIALS or piece in lookup:
            continue
        lookup[piece] = len(vocab)
        vocab.append(piece)
    tags = [t for t in dict.fromkeys(tags) if t not in SPECIALS]
    for tag in tags:
        if tag not in lookup:
            lookup[tag] = len(vocab)
            vocab.append(tag)
    return SentencePieceTokenizer({"src": model, "tgt": other_side or model}, "src", vocab, lookup, tags=tags)


def load_model_file(path: Path, tags: Sequence[str] = ()) -> SentencePieceTokenizer:
    """An existing `.model` file; ValueError naming it when sentencepiece cannot read it."""
    data = Path(path).read_bytes()
    try:
        return from_model(data, tags=tags)
    except (RuntimeError, OSError) as err:
        raise ValueError(f"{path}: not a sentencepiece model ({str(err).splitlines()[0]})") from None


def train(texts: Iterator[str], vocab_size: int, lowercase: bool = False, tags: Sequence[str] = ()) -> SentencePieceTokenizer:
    """A unigram sentencepiece model trained on the lines, with tx's special ids. vocab_size is
    an upper bound (a small corpus gives fewer pieces, as the other kinds do)."""
    out = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=(t for t in texts if t.strip()), model_writer=out, vocab_size=vocab_size,
            model_type="unigram", pad_id=0, unk_id=1, bos_id=2, eos_id=3, pad_piece=PAD, unk_piece=UNK,
            bos_piece=SPECIALS[2], eos_piece=EOS, hard_vocab_limit=False, minloglevel=2,
            # nmt_nfkc_cf: NFKC and case folding, as lowercase does for the other kinds
            normalization_rule_name="nmt_nfkc_cf" if lowercase else "nmt_nfkc",
            character_coverage=1.0, num_threads=1)
    except RuntimeError as err:  # e.g. fewer pieces allowed than the corpus has characters
        reason = str(err).splitlines()[0].split("] ")[-1]
        raise UsageError(f"tokenizer: sentencepiece could not train ({reason})") from None
    return from_model(out.getvalue(), tags=tags)
