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
        return self

    def to_plain(self) -> dict:
        """JSON/YAML-able dict with resolved absolute paths: exactly what ran."""
        return self.model_dump(mode="json")
