"""Recipe sections `data` (the parallel corpora, the longest pair kept) and `tokenizer` (how the
text is cut into subwords)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

from pydantic import Field, model_validator

from .types import MAX_LEN, MAX_STEPS, MAX_VOCAB, Bool, Int, Section


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
                suffix = self.path.suffix.lower()
                fmt = {".tsv": "tsv", ".jsonl": "jsonl"}.get(suffix)
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


class DataConfig(Section):
    # optional only in a run's saved recipe: an imported model (tx import) was trained elsewhere;
    # load_recipe requires both of every recipe given to train
    train: Optional[Corpus] = None
    valid: Optional[Corpus] = None
    test: Optional[Corpus] = None
    max_len: Int = Field(128, ge=2, le=MAX_LEN, description=f"longest pair kept, in subword tokens per side (at most {MAX_LEN})")


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
