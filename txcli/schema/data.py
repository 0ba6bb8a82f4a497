"""Recipe sections `data` (the parallel corpora, their mixture and filters, the longest pair kept,
subword sampling) and `tokenizer` (how the text is cut into subwords)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import BeforeValidator, Field, model_validator

from .types import MAX_LEN, MAX_STEPS, MAX_VOCAB, Bool, Float, Int, Section


class Corpus(Section):
    """A parallel corpus: two aligned plain-text files, or one TSV / JSONL file."""

    src: Optional[Path] = None
    tgt: Optional[Path] = None
    path: Optional[Path] = None
    format: Optional[Literal["text", "tsv", "jsonl"]] = None

    @model_validator(mode="after")
    def _one_layout(self) -> "Corpus":
        if self.path is not None:
            if self.src is not None or self.tgt is not None:
                raise ValueError("give either 'path' (TSV/JSONL) or 'src' and 'tgt', not both")
            if self.format is None:
                fmt = {".tsv": "tsv", ".jsonl": "jsonl"}.get(layout_suffix(self.path))
                if fmt is None:
                    raise ValueError(f"cannot tell the format of {self.path.name}: set 'format' to tsv or jsonl")
                object.__setattr__(self, "format", fmt)
            if self.format == "text":
                raise ValueError("format 'text' needs 'src' and 'tgt' files, not 'path'")
        else:
            if self.src is None or self.tgt is None:
                raise ValueError("give 'src' and 'tgt' (two aligned text files) or 'path' (one TSV/JSONL file)")
            object.__setattr__(self, "format", "text")
        return self

    def files(self) -> list[Path]:
        return [self.path] if self.path is not None else [self.src, self.tgt]


COMPRESSED = (".gz", ".zst")  # read transparently, by the file name's last suffix


def layout_suffix(path: Path) -> str:
    """The suffix that tells a file's layout, under a compression suffix: bt.tsv.gz -> .tsv."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


class LangId(Section):
    """Language identification of both sides (needs the `langid` extra: pip install 'tx[langid]')."""

    src: str = Field(min_length=2, max_length=3, description="the source language, an ISO 639-1 code (en)")
    tgt: str = Field(min_length=2, max_length=3, description="the target language, an ISO 639-1 code (de)")


class Filters(Section):
    """What a training pair must pass to be kept; every filter is off unless set. Token bounds
    count subwords per side (data.max_len always applies on top); character bounds count
    characters per side."""

    min_tokens: Optional[Int] = Field(None, ge=1, le=MAX_LEN, description="fewest subwords a side may have")
    max_tokens: Optional[Int] = Field(None, ge=1, le=MAX_LEN, description="most subwords a side may have")
    min_chars: Optional[Int] = Field(None, ge=1, le=100 * MAX_LEN, description="fewest characters a side may have")
    max_chars: Optional[Int] = Field(None, ge=1, le=100 * MAX_LEN, description="most characters a side may have")
    max_ratio: Optional[Float] = Field(None, ge=1, le=1000, description="longest side / shortest side, in subwords")
    same: Bool = Field(False, description="drop pairs whose source equals their target")
    duplicates: Bool = Field(False, description="drop a pair seen before in the same corpus (64-bit hashes)")
    min_letters: Optional[Float] = Field(None, gt=0, le=1, description="share of a side's non-space characters that must be letters")
    control_chars: Bool = Field(False, description="drop pairs with control characters (other than tab)")
    langid: Optional[LangId] = None

    @model_validator(mode="after")
    def _bounds_in_order(self) -> "Filters":
        for low, high in (("min_tokens", "max_tokens"), ("min_chars", "max_chars")):
            a, b = getattr(self, low), getattr(self, high)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{low} ({a}) is above {high} ({b})")
        return self

    def over(self, shared: "Filters") -> "Filters":
        """These filters on top of the shared ones: a key set here wins, the rest come from shared."""
        return shared.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class TrainCorpus(Corpus):
    """One training corpus among several: its name, its share of the training pairs, a tag token
    put before each of its source lines, and its own filters on top of data.filters."""

    name: Optional[str] = Field(None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: Float = Field(1.0, gt=0, le=1e6, description="this corpus's share of the training pairs, relative to the others")
    tag: Optional[str] = Field(None, min_length=1, max_length=32, pattern=r"^\S+$",
                               description="a token put before each source line (added to the vocabulary)")
    filters: Optional[Filters] = None


def _one_or_many(value):
    return [value] if isinstance(value, dict) else value


class Sampling(Section):
    """Subword regularisation, in training only (validation and decoding always segment the one
    best way): BPE-dropout for a bpe tokenizer, sampling for a sentencepiece one."""

    dropout: Optional[Float] = Field(None, gt=0, lt=1, description="BPE-dropout: the chance each merge is skipped")
    alpha: Optional[Float] = Field(None, gt=0, le=1, description="sentencepiece sampling smoothing")
    nbest: Int = Field(-1, ge=-1, le=1000, description="sentencepiece: sample among this many best (-1: all)")

    @model_validator(mode="after")
    def _one_kind(self) -> "Sampling":
        if (self.dropout is None) == (self.alpha is None):
            raise ValueError("set dropout (bpe tokenizers) or alpha (sentencepiece), one of them")
        return self


class DataConfig(Section):
    # optional only in a run's saved recipe: an imported model (tx import) was trained elsewhere;
    # load_recipe requires both of every recipe given to train. One corpus or a list of them.
    train: Annotated[Optional[list[TrainCorpus]], BeforeValidator(_one_or_many)] = Field(None, min_length=1, max_length=64)
    valid: Optional[Corpus] = None
    test: Optional[Corpus] = None
    max_len: Int = Field(128, ge=2, le=MAX_LEN, description=f"longest pair kept, in subword tokens per side (at most {MAX_LEN})")
    filters: Filters = Field(default_factory=Filters)
    sampling: Optional[Sampling] = None
    prepared: Optional[Path] = Field(None, description="the tx prepare cache to train from (default: RUN_DIR/prepared when it exists)")

    @model_validator(mode="after")
    def _corpus_names(self) -> "DataConfig":
        if self.train is None:
            return self
        if len(self.train) > 1 and any(c.name is None for c in self.train):
            i = next(i for i, c in enumerate(self.train) if c.name is None)
            raise ValueError(f"train.{i}.name: several corpora need a name each")
        names = [c.name or "train" for c in self.train]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"train: corpus name {twice[0]!r} is used twice")
        return self

    def corpora(self) -> list[TrainCorpus]:
        """The training corpora, each with its name (one corpus alone is 'train')."""
        return [c if c.name else c.model_copy(update={"name": "train"}) for c in (self.train or [])]

    def filters_of(self, corpus: TrainCorpus) -> Filters:
        return corpus.filters.over(self.filters) if corpus.filters is not None else self.filters


class TokenizerConfig(Section):
    kind: Literal["bpe", "unigram", "wordpiece", "sentencepiece"] = "bpe"
    vocab_size: Int = Field(8000, ge=16, le=MAX_VOCAB, description=f"subwords (at most {MAX_VOCAB:,})")
    joint: Bool = True
    min_frequency: Int = Field(2, ge=1, le=MAX_STEPS, description="a subword must occur this often")
    lowercase: Bool = False
    model: Optional[Path] = Field(None, description="kind sentencepiece: an existing .model file, loaded instead of trained")

    @model_validator(mode="after")
    def _model_file_kind(self) -> "TokenizerConfig":
        if self.model is not None and self.kind != "sentencepiece":
            raise ValueError("model (an existing .model file) needs kind: sentencepiece")
        return self
