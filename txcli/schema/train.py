"""Recipe section `train`: the optimizer, the schedule, stopping, checkpoints, precision and device,
continued training."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, Optional

from pydantic import Field, field_validator

from .types import MAX_BATCH_TOKENS, MAX_STEPS, Bool, Float, Int, Section


class EarlyStop(Section):
    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    patience: Int = Field(5, ge=1, le=MAX_STEPS, description="validations without improvement before stopping")


class StopAt(Section):
    """Stop once a validation reaches a quality target (loss: at or below it; bleu/chrf: at or above)."""

    metric: Literal["bleu", "chrf", "loss"] = "bleu"
    value: Float = Field(..., ge=0, le=100, description="the score to reach: BLEU or chrF 0-100, or a loss (at most 100)")


class TrainConfig(Section):
    batch_tokens: Int = Field(4096, ge=16, le=MAX_BATCH_TOKENS, description=f"padded tokens per batch and side (at most {MAX_BATCH_TOKENS:,})")
    accum_steps: Int = Field(1, ge=1, le=10_000, description="batches per update (at most 10,000)")
    lr: Float = Field(5e-4, gt=0, le=10, description="peak learning rate (at most 10)")
    warmup: Int = Field(1000, ge=0, le=MAX_STEPS)
    schedule: Literal["inverse_sqrt", "cosine"] = "inverse_sqrt"
    min_lr: Float = Field(0.0, ge=0, le=10, description="at most 10")
    weight_decay: Float = Field(0.0, ge=0, le=10, description="at most 10")
    betas: tuple[Annotated[Float, Field(ge=0, lt=1)], Annotated[Float, Field(ge=0, lt=1)]] = (0.9, 0.98)
    eps: Float = Field(1e-9, gt=0, le=1)
    clip_norm: Float = Field(1.0, ge=0, le=1e6, description="0 disables clipping")
    label_smoothing: Float = Field(0.1, ge=0, lt=1)
    max_steps: Int = Field(3000, ge=1, le=MAX_STEPS)
    max_minutes: Optional[Float] = Field(None, gt=0, le=1e7, description="stop after this wall time")
    log_every: Int = Field(50, ge=1, le=MAX_STEPS)
    eval_every: Int = Field(250, ge=1, le=MAX_STEPS)
    valid_max_sentences: Optional[Int] = Field(None, ge=1, le=MAX_STEPS, description="decode at most this many for BLEU")
    keep_best: Int = Field(3, ge=1, le=10_000, description="at most 10,000")
    keep_last: Int = Field(3, ge=0, le=10_000, description="also keep the latest N validated checkpoints (for tx average --last)")
    pool_size: Int = Field(50_000, ge=1, le=100_000_000, description="pairs length-sorted into batches at a time; bounds memory")
    early_stop: Optional[EarlyStop] = Field(default_factory=EarlyStop)
    stop_at: Optional[StopAt] = Field(None, description="stop on reaching this validation score")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("fp32", description="auto: bf16 where the hardware runs it fast, else fp32")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: Optional[Int] = Field(None, ge=1, le=4096)
    tensorboard: Bool = False
    # continued training: start from another run's weights (a run directory, or a checkpoint
    # directory in one); the tokenizer comes from there and the model section must match its
    init_from: Optional[Path] = None
    init_reset: Literal["all", "optimizer", "none"] = Field(
        "all", description="all: only the weights carry over; optimizer: also the step count (so the "
                           "schedule goes on); none: also the AdamW moments")
    ema: Optional[Float] = Field(None, gt=0, lt=1, description="decay of an exponential moving average of "
                                                                "the weights, e.g. 0.999 (off by default)")
    compile: bool | Literal["auto"] = Field(
        "auto", description="torch.compile the model and loss for training; auto: on CUDA only (on CPU eager measured faster)")

    @field_validator("compile", mode="before")
    @classmethod
    def _compile_choice(cls, value):
        if value is True or value is False or value == "auto":
            return value
        raise ValueError("expected true, false or auto")
