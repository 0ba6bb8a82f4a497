"""The training loop: accumulation, mixed precision, clipping, the schedule, validation, early
stopping and checkpoints, under DistributedDataParallel or alone.

Knows nothing of recipes' YAML or the terminal: `cfg` is any object with the attributes of
`recipe.TrainConfig`, and progress leaves through `on_event(events.Event)` (rank 0 only), which the
command layer turns into metrics.jsonl, train.log and the live display. The parts live beside it:
loss.py, optim.py, compiled.py, fast_dropout.py, distributed.py, validation.py, ema.py,
train_state.py and train_report.py; resume.py starts a Trainer from a checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from . import checkpoint as ckpt
from . import events
from .batching import Batch, BatchStream
from .compiled import compiled_forward_loss, resolve_compile
from .distributed import Dist
from .ema import EMA
from .fast_dropout import packed_dropout
from .loss import smoothed_loss_sum
from .optim import lr_at, make_optimizer
from .precision import autocast
from .train_report import TrainReport
from .train_state import DataFeed, RunPaths, TrainState, keep_step_checkpoint, last_checkpoint_contents, rng_state
from .validation import Validator, stop_reason


class Trainer:
    """One training run: `fit()` trains until max_steps, the time limit, the stop_at target,
    early stopping or a stop request (signal), and returns the reason. On CPU `fit()` trains with
    PackedDropout in place of the model's nn.Dropout (packed_dropout=None: on CPU only), and
    hands the model back with its own modules."""

    def __init__(self, model: torch.nn.Module, model_config: dict, cfg, stream: BatchStream,
                 validator: Optional[Validator], run_dir: Path, device: torch.device,
                 dist: Optional[Dist] = None, on_event: Callable[[events.Event], None] = lambda e: None,
                 train_model: Optional[torch.nn.Module] = None, packed_dropout: Optional[bool] = None):
        dist = dist or Dist()
        self.model = model                       # the bare model: what is saved and validated
        self.train_model = train_model or model  # what the forward pass runs through (DDP or bare)
        self.model_config = model_config
        self.cfg, self.stream, self.validator = cfg, stream, validator
        self.paths, self.device, self.dist = RunPaths(Path(run_dir)), device, dist
        self.on_event = on_event if dist.is_main else (lambda e: None)
        self.packed_dropout = device.type == "cpu" if packed_dropout is None else packed_dropout
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.state = TrainState()
        ema = getattr(cfg, "ema", None)
        self.ema = EMA(model, ema) if ema is not None and dist.is_main else None  # rank 0 validates and saves
        self.metric = cfg.early_stop.metric if cfg.early_stop is not None else "bleu"
        self.nan_message = ""  # why training stopped on a non-finite loss or gradient
        self._stop_request: Optional[str] = None
        self.compiled = resolve_compile(cfg.compile, device)
        self._forward_loss = (compiled_forward_loss(self.train_model, cfg.label_smoothing) if self.compiled
                              else self._eager_forward_loss)
        self.report = TrainReport(self.on_event, self.compiled)  # the clock, log windows, compile events
        self.feed = DataFeed(stream, device, dist.world_size,
                             lambda epoch, stats: self.report.epoch_end(self.state.step, epoch, stats))

    def _eager_forward_loss(self, src, tgt_in, tgt_out):
        return smoothed_loss_sum(self.train_model(src, tgt_in), tgt_out, self.cfg.label_smoothing)

    # ---- public

    def request_stop(self, reason: str) -> None:
        """Ask the loop to save and stop after the current step (safe from a signal handler)."""
        self._stop_request = reason

    def fit(self) -> str:
        self.report.start_clock(self.state.elapsed)
        self.on_event(events.Start(self.state.step, self.state.epoch, self.report.elapsed(), self.dist.world_size,
                                   str(self.device), self.cfg.precision))
        self.train_model.train()
        with packed_dropout(self.model, on=self.packed_dropout):
            try:
                reason = self._loop()
            finally:
                self.feed.close()  # the background thread building the next pool stops
            if reason != "nan":
                if reason != "interrupted" and self.state.validated_step != self.state.step:
                    self._validate()
                self._save_last()
        self.on_event(events.End(self.state.step, self.state.epoch, self.report.elapsed(), reason, self.metric,
                                 self.state.best_step, self.state.best_score))
        return reason

    # ---- the loop

    def _loop(self) -> str:
        cfg = self.cfg
        while True:
            if self.state.step >= cfg.max_steps:
                return "max_steps"
            started = time.monotonic()
            batches, position = self.feed.pull(cfg.accum_steps, self.state.position())
            local_stop = [self._stop_request is not None, self._time_is_up()]
            tokens, interrupted, timed_out = self.dist.sum([float(sum(b.n_tgt_tokens for b in batches)), *map(float, local_stop)])
            if interrupted:
                return "interrupted"
            if timed_out:
                return "max_minutes"
            # summed over ranks, so that every rank agrees on a non-finite loss
            loss_sum = self.dist.sum([self.accumulate_gradients(batches, tokens)])[0]
            if not self._optimizer_step(loss_sum):
                return "nan"
            self.state.move_to(position)
            self.state.step += 1
            if self.ema is not None:
                self.ema.update(self.model, self.state.step)
            seconds = time.monotonic() - started
            if self.compiled:
                self.report.compiled(self.state.step, seconds)
            self.report.step(loss_sum, tokens, seconds)
            if self.state.step % cfg.log_every == 0:
                self.report.log(self.state.step, self.state.epoch, self.current_lr(self.state.step))
            if self.state.step % cfg.eval_every == 0:
                stop = self._validate()
                self._save_last()
                if self.dist.from_main(stop is not None):  # rank 0 decides, for every rank
                    return "target" if self.dist.from_main(stop == "target") else "early_stop"

    def accumulate_gradients(self, batches: list[Batch], total_tokens: float) -> float:
        """Forward and backward over the micro-batches; gradients end up as the mean per target
        token over all of them (and all ranks), whatever the split. Returns this rank's summed loss."""
        self.optimizer.zero_grad(set_to_none=True)
        scale = self.dist.world_size / max(total_tokens, 1.0)  # DDP averages over ranks
        loss_total = 0.0
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            with self._no_sync(not last):  # DDP all-reduces the gradients once, after the last
                with autocast(self.device, self.cfg.precision):
                    loss = self._forward_loss(b.src, b.tgt_in, b.tgt_out)
                scaled = loss * scale
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            loss_total += float(loss.detach())
        return loss_total

    def _optimizer_step(self, loss_sum: float) -> bool:
        """Clip, set the learning rate, step. False (and no step taken) if the loss or the
        gradients are not finite."""
        if not math.isfinite(loss_sum):
            return self._nonfinite(f"loss became {loss_sum}")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.cfg.clip_norm > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.clip_norm)
            if self.scaler is None and not torch.isfinite(norm):
                return self._nonfinite("gradient norm became non-finite")
        lr = self.current_lr(self.state.step + 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        return True

    def current_lr(self, step: int) -> float:
        c = self.cfg
        return lr_at(step, c.lr, c.warmup, c.schedule, c.max_steps, c.min_lr)

    def _nonfinite(self, what: str) -> bool:
        last = self.paths.last if self.paths.last.exists() else None
        where = f"the last good checkpoint stays in {last}" if last else "no checkpoint was written yet"
        self.nan_message = (f"{what} at step {self.state.step + 1}; training stopped and {where}. "
                            "Try a lower train.lr, a longer train.warmup or train.precision fp32")
        self.on_event(events.Failure(self.state.step + 1, self.nan_message))
        return False

    def _no_sync(self, skip: bool):
        if skip and hasattr(self.train_model, "no_sync"):
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def _time_is_up(self) -> bool:
        return self.cfg.max_minutes is not None and self.report.elapsed() >= self.cfg.max_minutes * 60

    # ---- validation and checkpoints

    def _validate(self) -> Optional[str]:
        """Rank 0 validates, keeps the best weights and step checkpoints; returns why training
        should stop ("target", "early_stop") or None."""
        self.state.validated_step = self.state.step
        if not self.dist.is_main or self.validator is None:
            return None
        scores = self.validator(self.model)
        score = scores[self.metric]
        ema_scores = None
        if self.ema is not None:
            with self.ema.swapped_in(self.model):
                ema_scores = self.validator(self.model)
        # model.safetensors gets the better of the two weights, if it beats the best so far
        use_ema = ema_scores is not None and self._better(ema_scores[self.metric], score)
        candidate = ema_scores[self.metric] if use_ema else score
        best = self.state.best_score is None or self._better(candidate, self.state.best_score)
        if best:
            self.state.best_score, self.state.best_step, self.state.bad_validations = candidate, self.state.step, 0
            weights = "ema" if use_ema else "model"
            extra = {"tx.step": str(self.state.step), f"tx.{self.metric}": f"{candidate:.4f}", "tx.weights": weights}
            with (self.ema.swapped_in(self.model) if use_ema else contextlib.nullcontext()):
                ckpt.save_model(self.paths.model, self.model, self.model_config, extra)
        else:
            self.state.bad_validations += 1
        save = functools.partial(ckpt.save_weights_checkpoint, model=self.model, model_config=self.model_config,
                                 state={"step": self.state.step, "metric": self.metric, **scores})
        keep_step_checkpoint(self.state, self.paths, score, events.HIGHER_IS_BETTER[self.metric], self.cfg.keep_best,
                             self.cfg.keep_last, save)  # the trained weights: what `tx average` averages
        elapsed = round(self.report.elapsed(), 3)
        self.on_event(events.Validation(self.state.step, self.state.epoch, elapsed, **scores,
                                        best=best and not use_ema))
        if ema_scores is not None:
            self.on_event(events.Validation(self.state.step, self.state.epoch, elapsed, **ema_scores,
                                            best=best and use_ema, weights="ema"))
        return stop_reason(self.cfg, ema_scores if use_ema else scores, self.state.bad_validations)

    def _better(self, a: float, b: float) -> bool:
        return a > b if events.HIGHER_IS_BETTER[self.metric] else a < b

    def _save_last(self) -> None:
        rng = self.dist.gather(rng_state(self.device))  # every rank's dropout stream
        if not self.dist.is_main:
            return
        self.state.elapsed = self.report.elapsed()
        tensors, state = last_checkpoint_contents(self.state, self.optimizer, self.ema, rng, self.dist.world_size,
                                                  self.cfg.precision, self.scaler)
        ckpt.save_training_checkpoint(self.paths.last, self.model, self.model_config, tensors, state)
        self.on_event(events.CheckpointSaved(self.state.step, round(self.report.elapsed(), 3), str(self.paths.last)))
