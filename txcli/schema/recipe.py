"""The whole recipe: its sections and the checks that span two of them."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from .data import DataConfig, TokenizerConfig
from .decode import DecodeConfig
from .model import ModelSection
from .train import TrainConfig
from .types import Int, Section


class Recipe(Section):
    name: str
    run_dir: Path
    seed: Int = Field(1, ge=0, le=2**63 - 1)
    data: DataConfig = Field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decode: DecodeConfig = Field(default_factory=DecodeConfig)

    @model_validator(mode="after")
    def _cross_checks(self) -> "Recipe":
        if self.train.precision == "fp16" and self.train.device == "cpu":
            raise ValueError("train.precision fp16 needs CUDA; use bf16 on a CPU")
        sampling, kind = self.data.sampling, self.tokenizer.kind
        if sampling is not None and sampling.dropout is not None and kind != "bpe":
            raise ValueError(f"data.sampling.dropout is BPE-dropout and needs tokenizer.kind bpe (not {kind}); "
                             "a sentencepiece tokenizer samples with data.sampling.alpha")
        if sampling is not None and sampling.alpha is not None and kind != "sentencepiece":
            raise ValueError(f"data.sampling.alpha needs tokenizer.kind sentencepiece (not {kind}); "
                             "a bpe tokenizer samples with data.sampling.dropout")
        return self

    def to_plain(self) -> dict:
        """JSON/YAML-able dict with resolved absolute paths: exactly what ran."""
        return self.model_dump(mode="json")
