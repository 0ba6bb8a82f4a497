"""Recipe section `decode`: the search settings every decoding command starts from."""

from __future__ import annotations

from pydantic import Field

from .types import MAX_BATCH_TOKENS, MAX_LEN, Float, Int, Section


class DecodeConfig(Section):
    beam: Int = Field(5, ge=1, le=1024, description="at most 1024")
    alpha: Float = Field(0.6, ge=0, le=100, description="GNMT length penalty; 0 turns it off")
    max_len_a: Float = Field(1.2, ge=0, le=1000)
    max_len_b: Int = Field(10, ge=0, le=MAX_LEN)
    min_len: Int = Field(0, ge=0, le=MAX_LEN)
    no_repeat_ngram: Int = Field(0, ge=0, le=MAX_LEN)
    batch_tokens: Int = Field(4096, ge=16, le=MAX_BATCH_TOKENS, description=f"at most {MAX_BATCH_TOKENS:,}")
