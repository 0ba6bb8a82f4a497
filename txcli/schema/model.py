"""Recipe section `model`: the Transformer's shape."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from ..model_schema import check_heads_divide
from .types import MAX_FF, MAX_HEADS, MAX_LAYERS, MAX_WIDTH, Bool, Float, Int, Section


class ModelSection(Section):
    d_model: Int = Field(256, ge=8, le=MAX_WIDTH, description=f"model width (at most {MAX_WIDTH})")
    heads: Int = Field(4, ge=1, le=MAX_HEADS, description=f"attention heads (at most {MAX_HEADS})")
    ff: Int = Field(1024, ge=8, le=MAX_FF, description=f"feed-forward width (at most {MAX_FF})")
    encoder_layers: Int = Field(3, ge=1, le=MAX_LAYERS, description=f"at most {MAX_LAYERS}")
    decoder_layers: Int = Field(3, ge=1, le=MAX_LAYERS, description=f"at most {MAX_LAYERS}")
    dropout: Float = Field(0.1, ge=0.0, lt=1.0)
    norm: Literal["pre", "post"] = "pre"
    activation: Literal["relu", "gelu", "silu"] = "relu"
    tie_embeddings: Bool = True
    output_bias: Bool = Field(False, description="a bias on the output projection also when tied "
                                                  "(untied: always); Marian models have one")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelSection":
        check_heads_divide(self.d_model, self.heads)
        return self
