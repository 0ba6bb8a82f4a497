"""The training loop: loss, optimizer, schedule, accumulation, mixed precision, validation,
early stopping, checkpoints, resume, and DistributedDataParallel.

Knows nothing of recipes' YAML or the terminal: `cfg` is any object with the attributes of
`recipe.TrainConfig`, and progress leaves through `on_event(events.Event)` (rank 0 only), which the
command layer turns into metrics.jsonl, train.log and the live display.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as torch_dist

from . import checkpoint as ckpt
from . import events
from .batching import Batch, BatchStream, EncodedPairs, EpochStats, eval_batches
from .errors import TxError
from .precision import autocast
from .search import greedy_search
from .tokenizer import BOS_ID, EOS_ID, PAD_ID

# --------------------------------------------------------------------------- schedule and loss


def lr_at(step: int, lr: float, warmup: int, schedule: str, max_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate for optimizer update number `step` (1-based).

    inverse_sqrt (Vaswani et al. 2017, with the peak at `lr`): lr * min(step/warmup, sqrt(warmup/step))
    cosine: linear warmup to lr, then min_lr + (lr - min_lr) * (1 + cos(pi * progress)) / 2,
            progress = (step - warmup) / (max_steps - warmup), held at 1 after max_steps.
    Neither goes below min_lr.
    """
    step = max(step, 1)
    if schedule == "inverse_sqrt":
        w = max(warmup, 1)
        return max(min_lr, lr * min(step / w, math.sqrt(w / step)))
    if schedule == "cosine":
        if step < warmup:
            return max(min_lr, lr * step / warmup)
        progress = min(1.0, (step - warmup) / max(1, max_steps - warmup))
        return min_lr + (lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


def smoothed_loss_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """Summed label-smoothed cross-entropy over the non-padding targets (Szegedy et al. 2016:
    the one-hot target mixed with `smoothing` spread uniformly over the vocabulary):
    per token  logsumexp(z) - (1 - smoothing) * z[target] - smoothing * mean(z)."""
    logits = logits.reshape(-1, logits.size(-1))
    if logits.requires_grad:
        return _SmoothedCrossEntropy.apply(logits, target.reshape(-1), smoothing)
    return _smoothed_rows(logits, target.reshape(-1), smoothing)[0]


LOSS_ROWS = 256  # rows of logits handled at once: their fp32 copy stays in cache


def _smoothed_rows(logits, target, smoothing):
    """(summed loss, logsumexp per row), LOSS_ROWS rows at a time, accumulated in float32."""
    V = logits.size(1)
    keep = target != PAD_ID
    lse = torch.empty(logits.size(0), dtype=torch.float32, device=logits.device)
    total = torch.zeros((), dtype=torch.float32, device=logits.device)
    for start in range(0, logits.size(0), LOSS_ROWS):
        rows = slice(start, start + LOSS_ROWS)
        z = logits[rows].float()
        lse[rows] = torch.logsumexp(z, dim=-1)
        picked = z.gather(1, target[rows, None]).squeeze(1)
        per_row = lse[rows] - (1.0 - smoothing) * picked - (smoothing / V) * z.sum(-1)
        total += torch.where(keep[rows], per_row, 0.0).sum()
    return total, lse, keep


class _SmoothedCrossEntropy(torch.autograd.Function):
    """The loss and its gradient (softmax - smoothed target) in row blocks, without the full-size
    float32 log-probabilities, their gradient and the zero-filled buffers that
    F.cross_entropy(label_smoothing=...) goes through: on CPU the loss is memory-bound."""

    @staticmethod
    def forward(ctx, logits, target, smoothing):
        total, lse, keep = _smoothed_rows(logits, target, smoothing)
        ctx.save_for_backward(logits, target, lse, keep)
        ctx.smoothing = smoothing
        return total

    @staticmethod
    def backward(ctx, grad_total):
        logits, target, lse, keep = ctx.saved_tensors
        eps, V = ctx.smoothing, logits.size(1)
        grad = torch.empty_like(logits)
        scale = keep.float() * grad_total.float()
        in_place = grad.dtype == torch.float32  # float32 logits: work in grad's own rows, no copy
        for start in range(0, logits.size(0), LOSS_ROWS):
            rows = slice(start, start + LOSS_ROWS)
            z = logits[rows].float()
            g = torch.sub(z, lse[rows, None], out=grad[rows]) if in_place else z - lse[rows, None]
            g.exp_().sub_(eps / V)
            g.scatter_add_(1, target[rows, None], g.new_full((g.size(0), 1), eps - 1.0))
            g.mul_(scale[rows, None])
            if not in_place:
                grad[rows] = g
        return grad, None, None


def plain_smoothed_loss_sum(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> torch.Tensor:
    """smoothed_loss_sum in whole-tensor ops, for torch.compile: inductor fuses the forward and
    the backward into a few passes over the logits, which the row blocks above do by hand."""
    z = logits.reshape(-1, logits.size(-1)).float()
    target = target.reshape(-1)
    per_row = (torch.logsumexp(z, dim=-1) - (1.0 - smoothing) * z.gather(1, target[:, None]).squeeze(1)
               - (smoothing / z.size(1)) * z.sum(-1))
    return torch.where(target != PAD_ID, per_row, 0.0).sum()


def resolve_compile(setting, device: torch.device) -> bool:
    """train.compile: true, false, or auto: compile on CUDA only. On the 2-core CPU compiled
    training measured slower than eager (bench/train_throughput.py, README); CUDA is unmeasured
    here, where inductor's fused kernels are its usual gain."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process (each recompile adds one)."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.AdamW:
    """AdamW; biases and LayerNorm gains (1-D tensors) get no weight decay. The fused kernel
    (same update, one pass per tensor) where this torch has it for the device: on the 2-core
    CPU it steps the demo model in 10 ms instead of 29."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    try:
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, fused=True)
    except (RuntimeError, ValueError, TypeError):  # no fused kernel for this device or version
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps)


# --------------------------------------------------------------------------- dropout


@torch.library.custom_op("txcli::random_bits", mutates_args=())
def random_bits(n: int, device: torch.device) -> torch.Tensor:
    """n uniform 64-bit integers. On CPU from numpy's SFC64, seeded with a draw from torch's
    generator (so torch.manual_seed and the RNG state a checkpoint keeps decide them): faster than
    torch's own mt19937 (a training step's 10M draws: 28.5 ms against 33.3), and both run on one
    thread; splitting the draw over two threads measured no faster. An opaque op to
    torch.compile, which cannot trace the in-place random_ (a graph break) and would otherwise
    draw its own masks, and draw them again in the backward pass."""
    if device.type == "cpu":
        seed = int(torch.empty((), dtype=torch.int64).random_())
        return torch.from_numpy(np.random.SFC64(seed).random_raw(n).view(np.int64))
    return torch.empty(n, dtype=torch.int64, device=device).random_(-(2 ** 63), None)


@random_bits.register_fake
def _(n, device):
    return torch.empty(n, dtype=torch.int64, device=device)


class PackedDropout(torch.nn.Module):
    """nn.Dropout with a cheaper mask, for CPU: one 64-bit random number makes four 16-bit ones,
    each compared with p * 2^16. torch's CPU dropout draws a float per element, and drawing took
    most of its time (4096x1024 fp32, one thread: 46 ms a call, this 26 ms). The mask is then
    made once as numbers, 0 or 1/(1-p) in x's dtype, so that the forward and the backward pass are
    each one multiply: torch.where with a boolean mask costs 4x a multiply on CPU. p is rounded to
    a multiple of 2^-16 (0.1 -> 0.100006); kept values are scaled by the exact inverse keep rate,
    so expectations stay unbiased. No parameters: state dicts do not change."""

    def __init__(self, p: float):
        super().__init__()
        dropped = round(p * 65536)
        self.p = p
        self.threshold = dropped - 32768  # int16 draws below it are dropped
        self.scale = 65536 / (65536 - dropped)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        n = x.numel()
        with torch.no_grad():
            bits = random_bits((n + 3) // 4, x.device).view(torch.int16)[:n].view(x.shape)
            # the comparison writes 1.0 or 0.0 straight into x's dtype: two thirds of the time of a
            # boolean mask converted afterwards
            mask = torch.ge(bits, self.threshold, out=torch.empty_like(x))
            exact = x.dtype == torch.float32  # bf16 would round the scale: 1.1111 -> 1.1094
            if exact:
                mask.mul_(self.scale)
        # in bf16/fp16 a scalar multiply scales, so that only the product is rounded
        return x * mask if exact else x * mask * self.scale

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_packed_dropout(model: torch.nn.Module) -> None:
    """Swap every nn.Dropout of the model for PackedDropout of the same p (in place)."""
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is torch.nn.Dropout:
                setattr(module, name, PackedDropout(child.p))


# --------------------------------------------------------------------------- distributed


@dataclass
class Dist:
    """This process's place in a torchrun job; world_size 1 means no process group."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def sum(self, values: list[float]) -> list[float]:
        if self.world_size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self._device())
        torch_dist.all_reduce(t)
        return t.tolist()

    def from_main(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        torch_dist.broadcast(t, 0)
        return bool(t.item())

    def gather(self, obj) -> list:
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        torch_dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()

    @staticmethod
    def _device():
        return "cuda" if torch_dist.get_backend() == "nccl" else "cpu"


# --------------------------------------------------------------------------- validation


class Validator:
    """Loss and perplexity over the validation pairs; BLEU and chrF (sacrebleu) of greedy output
    against the reference text."""

    def __init__(self, pairs: EncodedPairs, references: list[str], detokenize: Callable[[list[list[int]]], list[str]],
                 batch_tokens: int, max_len_a: float, max_len_b: int, max_sentences: Optional[int],
                 device: torch.device, precision: str = "fp32"):
        self.batches = eval_batches(pairs, batch_tokens)
        self.references = references
        self.detokenize = detokenize
        self.max_len_a, self.max_len_b = max_len_a, max_len_b
        self.size = len(pairs)
        self.decode_pairs = len(pairs) if max_sentences is None else min(max_sentences, len(pairs))
        self.device, self.precision = device, precision

    @torch.inference_mode()
    def __call__(self, model) -> dict:
        was_training = model.training
        model.eval()
        try:
            with autocast(self.device, self.precision):
                loss = self._loss(model)
                bleu, chrf = self._scores(model)
        finally:
            model.train(was_training)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0)), "bleu": bleu, "chrf": chrf}

    def _loss(self, model) -> float:
        total, tokens = 0.0, 0
        for _, batch in self.batches:
            b = batch.to(self.device)
            logits = model(b.src, b.tgt_in)
            total += float(smoothed_loss_sum(logits, b.tgt_out, 0.0))
            tokens += b.n_tgt_tokens
        return total / max(tokens, 1)

    def _scores(self, model) -> tuple[float, float]:
        import sacrebleu

        hyps: dict[int, list[int]] = {}
        max_positions = model.positions.size(0)
        for index, batch in self.batches:
            keep = index < self.decode_pairs
            if not keep.any():
                continue
            src = batch.src[torch.from_numpy(keep)]
            src = src[:, : int((src != PAD_ID).sum(1).max())].to(self.device)
            max_len = min(int(self.max_len_a * src.size(1) + self.max_len_b), max_positions - 1)
            for i, ids in zip(index[keep], greedy_search(model, src, max_len, BOS_ID, EOS_ID)):
                hyps[int(i)] = ids
        order = sorted(hyps)
        text = self.detokenize([hyps[i] for i in order])
        refs = [self.references[i] for i in order]
        # force: pre-tokenized references are fine here; without it sacrebleu warns on stderr
        return sacrebleu.corpus_bleu(text, [refs], force=True).score, sacrebleu.corpus_chrf(text, [refs]).score


# --------------------------------------------------------------------------- weight averaging


class EMA:
    """Exponential moving average of the parameters, updated after each optimizer step:

        ema = d * ema + (1 - d) * w,   d = min(decay, (1 + t) / (10 + t)),   t = updates so far

    The warm-up on d (as in TensorFlow's ExponentialMovingAverage with num_updates) keeps the
    first steps from leaving the average stuck near the random initial weights: at t = 1 it takes
    82% of the new weights, and d reaches 0.999 only after ~9,000 updates. Kept in float32 on the
    model's device; buffers (the positional table) are not averaged."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.names = [n for n, _ in model.named_parameters()]  # shared (tied) tensors once
        self.shadow = [p.detach().float().clone() for _, p in model.named_parameters()]

    def decay_at(self, updates: int) -> float:
        return min(self.decay, (1 + updates) / (10 + updates))

    @torch.no_grad()
    def update(self, model: torch.nn.Module, updates: int) -> None:
        params = [p.detach().float() for p in model.parameters()]
        torch._foreach_lerp_(self.shadow, params, 1.0 - self.decay_at(updates))

    @torch.no_grad()
    def reset(self, model: torch.nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            s.copy_(p.detach())

    def tensors(self) -> dict[str, torch.Tensor]:
        return {f"ema.{n}": t for n, t in zip(self.names, self.shadow)}

    def load(self, tensors: dict[str, torch.Tensor]) -> bool:
        """From a checkpoint's trainer tensors; False (nothing loaded) if it holds no EMA."""
        if not all(f"ema.{n}" in tensors for n in self.names):
            return False
        with torch.no_grad():
            for n, s in zip(self.names, self.shadow):
                s.copy_(tensors[f"ema.{n}"])
        return True

    @contextlib.contextmanager
    def swapped_in(self, model: torch.nn.Module):
        """The model holds the averaged weights inside the block, its own again after it."""
        params = list(model.parameters())
        backup = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, s in zip(params, self.shadow):
                p.copy_(s)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, b in zip(params, backup):
                    p.copy_(b)


# --------------------------------------------------------------------------- the loop


def stop_reason(cfg, scores: dict, bad_validations: int) -> Optional[str]:
    """After a validation: "target" once cfg.stop_at's score is reached, "early_stop" after
    early_stop.patience validations without a new best, else None (go on to max_steps)."""
    target = cfg.stop_at
    if target is not None:
        score = scores[target.metric]
        if score >= target.value if events.HIGHER_IS_BETTER[target.metric] else score <= target.value:
            return "target"
    es = cfg.early_stop
    if es is not None and bad_validations >= es.patience:
        return "early_stop"
    return None


@dataclass
class TrainState:
    """Where training stands; saved as JSON in every checkpoint."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # global batches (all ranks) of the current epoch already trained on
    elapsed: float = 0.0   # seconds of training, summed over every session of this run
    best_score: Optional[float] = None
    best_step: int = 0
    bad_validations: int = 0
    validated_step: int = -1
    kept: dict = field(default_factory=dict)  # "step" -> score of each step-NNNNNN checkpoint


@dataclass
class RunPaths:
    run_dir: Path

    @property
    def checkpoints(self) -> Path:
        return self.run_dir / ckpt.CHECKPOINTS

    @property
    def last(self) -> Path:
        return self.checkpoints / ckpt.LAST_CHECKPOINT

    @property
    def model(self) -> Path:
        return self.run_dir / ckpt.MODEL_FILE


class Trainer:
    """One training run: `fit()` trains until max_steps, the time limit, the stop_at target,
    early stopping or a stop request (signal), and returns the reason."""

    def __init__(self, model: torch.nn.Module, model_config: dict, cfg, stream: BatchStream,
                 validator: Optional[Validator], run_dir: Path, device: torch.device,
                 dist: Optional[Dist] = None, on_event: Callable[[events.Event], None] = lambda e: None,
                 train_model: Optional[torch.nn.Module] = None):
        dist = dist or Dist()
        self.model = model                       # the bare model: what is saved and validated
        self.train_model = train_model or model  # what the forward pass runs through (DDP or bare)
        self.model_config = model_config
        self.cfg, self.stream, self.validator = cfg, stream, validator
        self.paths, self.device, self.dist = RunPaths(Path(run_dir)), device, dist
        self.on_event = on_event if dist.is_main else (lambda e: None)
        if device.type == "cpu":
            use_packed_dropout(model)
        self.optimizer = make_optimizer(model, cfg)
        self.scaler = torch.amp.GradScaler(device.type) if cfg.precision == "fp16" else None
        self.state = TrainState()
        ema = getattr(cfg, "ema", None)
        self.ema = EMA(model, ema) if ema is not None and dist.is_main else None  # rank 0 validates and saves
        self.metric = cfg.early_stop.metric if cfg.early_stop is not None else "bleu"
        self._stop_request: Optional[str] = None
        self._batches: Optional[Iterator[Batch]] = None
        self._epoch_stats = EpochStats()
        self._window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
        self.compiled = resolve_compile(cfg.compile, device)
        self._forward_loss = self._compiled_forward_loss() if self.compiled else self._eager_forward_loss
        self._graphs = compiled_graphs() if self.compiled else 0

    def _eager_forward_loss(self, src, tgt_in, tgt_out):
        return smoothed_loss_sum(self.train_model(src, tgt_in), tgt_out, self.cfg.label_smoothing)

    def _compiled_forward_loss(self):
        """Model and loss compiled apart (the model wrapper works under DDP; a DDP module is best
        compiled whole). dynamic=True: one graph for every batch shape, not one per length bucket.
        Parameters are shared with self.model, which stays eager for validation and saving."""
        model = torch.compile(self.train_model, dynamic=True)
        loss = torch.compile(plain_smoothed_loss_sum, dynamic=True)
        smoothing = self.cfg.label_smoothing
        return lambda src, tgt_in, tgt_out: loss(model(src, tgt_in), tgt_out, smoothing)

    # ---- public

    def request_stop(self, reason: str) -> None:
        """Ask the loop to save and stop after the current step (safe from a signal handler)."""
        self._stop_request = reason

    def fit(self) -> str:
        self._session_start = time.monotonic() - self.state.elapsed
        self.on_event(events.Start(self.state.step, self.state.epoch, self._elapsed(), self.dist.world_size,
                                   str(self.device), self.cfg.precision))
        self.train_model.train()
        reason = self._loop()
        if reason != "nan":
            if reason != "interrupted" and self.state.validated_step != self.state.step:
                self._validate()
            self._save_last()
        self.on_event(events.End(self.state.step, self.state.epoch, self._elapsed(), reason, self.metric,
                                 self.state.best_step, self.state.best_score))
        return reason

    def load(self, path: Path) -> None:
        """Resume: weights, optimizer, scaler, RNG and data position from a checkpoint directory."""
        config, weights, trainer, state = ckpt.load_training_checkpoint(path)
        where = ckpt.resolve_checkpoint_dir(path)
        if config != self.model_config:
            raise TxError(f"{where}: its model configuration differs from the recipe's; "
                          "resume with the recipe the run was started with")
        try:
            self.model.load_state_dict(weights, strict=True)
            self.optimizer.load_state_dict(ckpt.optimizer_from_tensors(trainer, state["optimizer"]))
            self.state = TrainState(**state["train_state"])
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise TxError(f"{where}: damaged checkpoint ({str(err).splitlines()[0]})") from None
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and not self.ema.load(trainer):
            self.ema.reset(self.model)  # train.ema switched on for the resumed run: start it here
        self._restore_rng(trainer, state.get("world_size", 1))

    def init_from(self, weights: Path, reset: str, checkpoint: Optional[Path]) -> None:
        """Continued training: another run's weights; with reset 'optimizer' also its step count
        (the schedule goes on from there), with 'none' also its AdamW state. The data position,
        best score and kept checkpoints start fresh: they belong to the source run's data."""
        config, state, _ = ckpt.load_model_state(weights)
        if config != self.model_config:
            key = next(k for k in sorted(set(config) | set(self.model_config))
                       if config.get(k) != self.model_config.get(k))
            raise TxError(f"{weights}: model {key} is {config.get(key)}, this run's is {self.model_config.get(key)} "
                          "(train.init_from needs the same model)")
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise TxError(f"{weights}: weights do not match ({str(err).splitlines()[0]})") from None
        if reset in ("optimizer", "none") and checkpoint is not None:
            saved = ckpt.read_json(checkpoint / ckpt.CHECKPOINT_STATE)
            self.state = TrainState(step=int(saved.get("step", 0)))
        if reset == "none" and checkpoint is not None:
            tensors, _ = ckpt.load_tensors(checkpoint / ckpt.CHECKPOINT_TRAINER)
            saved = ckpt.read_json(checkpoint / ckpt.CHECKPOINT_STATE)
            try:
                self.optimizer.load_state_dict(ckpt.optimizer_from_tensors(tensors, saved["optimizer"]))
            except (KeyError, TypeError, ValueError, RuntimeError) as err:
                raise TxError(f"{checkpoint}: damaged optimizer state ({str(err).splitlines()[0]})") from None
        if self.ema is not None:
            self.ema.reset(self.model)

    # ---- the loop

    def _loop(self) -> str:
        cfg = self.cfg
        while True:
            if self.state.step >= cfg.max_steps:
                return "max_steps"
            started = time.monotonic()
            batches, position = self._pull(cfg.accum_steps)
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
            self.state.epoch, self.state.batches_done = position
            self.state.step += 1
            if self.ema is not None:
                self.ema.update(self.model, self.state.step)
            seconds = time.monotonic() - started
            if self.compiled:
                self._compile_event(seconds)
            self._window_add(loss_sum, tokens, seconds)
            if self.state.step % cfg.log_every == 0:
                self._log()
            if self.state.step % cfg.eval_every == 0:
                stop = self._validate()
                self._save_last()
                if self.dist.from_main(stop is not None):  # rank 0 decides, for every rank
                    return "target" if self.dist.from_main(stop == "target") else "early_stop"

    def _pull(self, n: int) -> tuple[list[Batch], tuple[int, int]]:
        """The next n batches of this rank, and the data position after them."""
        epoch, done = self.state.epoch, self.state.batches_done
        if self._batches is None:
            self._batches = self.stream.epoch(epoch, skip=done, stats=self._epoch_stats)
        out = []
        while len(out) < n:
            batch = next(self._batches, None)
            if batch is None:
                if self._epoch_stats.batches == 0:
                    raise TxError("no training pairs left after length filtering (see data.max_len)")
                self._epoch_event(epoch)
                epoch, done = epoch + 1, 0
                self._epoch_stats = EpochStats()
                self._batches = self.stream.epoch(epoch, stats=self._epoch_stats)
                continue
            out.append(batch.to(self.device))
            done += self.dist.world_size
        return out, (epoch, done)

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
        self._nan_message = (f"{what} at step {self.state.step + 1}; training stopped and {where}. "
                             "Try a lower train.lr, a longer train.warmup or train.precision fp32")
        self.on_event(events.Failure(self.state.step + 1, self._nan_message))
        return False

    @property
    def nan_message(self) -> str:
        return getattr(self, "_nan_message", "")

    def _no_sync(self, skip: bool):
        if skip and hasattr(self.train_model, "no_sync"):
            return self.train_model.no_sync()
        return contextlib.nullcontext()

    def _time_is_up(self) -> bool:
        return self.cfg.max_minutes is not None and self._elapsed() >= self.cfg.max_minutes * 60

    def _elapsed(self) -> float:
        return time.monotonic() - self._session_start

    # ---- reporting

    def _window_add(self, loss_sum: float, tokens: int, seconds: float) -> None:
        w = self._window
        w["loss"] += loss_sum
        w["tokens"] += tokens
        w["seconds"] += seconds

    def _log(self) -> None:
        w = self._window  # loss and target tokens of the whole job (all ranks)
        self.on_event(events.Log(self.state.step, self.state.epoch, round(self._elapsed(), 3),
                                 w["loss"] / max(w["tokens"], 1), self.current_lr(self.state.step),
                                 w["tokens"] / max(w["seconds"], 1e-9)))
        self._window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}

    def _compile_event(self, seconds: float) -> None:
        """A step that built graphs (the first, and any recompile) reports what it cost."""
        graphs = compiled_graphs()
        if graphs != self._graphs:
            self.on_event(events.Compiled(self.state.step, round(self._elapsed(), 3), graphs - self._graphs,
                                          graphs, round(seconds, 3)))
            self._graphs = graphs

    def _epoch_event(self, epoch: int) -> None:
        s = self._epoch_stats
        self.on_event(events.EpochEnd(self.state.step, epoch, round(self._elapsed(), 3), s.filtered.kept,
                                      s.filtered.too_long, s.filtered.empty, s.batches,
                                      1.0 - s.tokens / max(s.padded_tokens, 1)))

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
        best = self._is_better(candidate)
        if best:
            self.state.best_score, self.state.best_step, self.state.bad_validations = candidate, self.state.step, 0
            weights = "ema" if use_ema else "model"
            extra = {"tx.step": str(self.state.step), f"tx.{self.metric}": f"{candidate:.4f}", "tx.weights": weights}
            with (self.ema.swapped_in(self.model) if use_ema else contextlib.nullcontext()):
                ckpt.save_model(self.paths.model, self.model, self.model_config, extra)
        else:
            self.state.bad_validations += 1
        self._keep_step_checkpoint(score, scores)  # the trained weights: what `tx average` averages
        elapsed = round(self._elapsed(), 3)
        self.on_event(events.Validation(self.state.step, self.state.epoch, elapsed, **scores,
                                        best=best and not use_ema))
        if ema_scores is not None:
            self.on_event(events.Validation(self.state.step, self.state.epoch, elapsed, **ema_scores,
                                            best=best and use_ema, weights="ema"))
        return stop_reason(self.cfg, ema_scores if use_ema else scores, self.state.bad_validations)

    def _is_better(self, score: float) -> bool:
        return self.state.best_score is None or self._better(score, self.state.best_score)

    def _better(self, a: float, b: float) -> bool:
        return a > b if events.HIGHER_IS_BETTER[self.metric] else a < b

    def _keep_step_checkpoint(self, score: float, scores: dict) -> None:
        """Save step-NNNNNN if it is among the best `keep_best` or the latest `keep_last`; delete
        the step checkpoints that no longer are."""
        import shutil

        kept = {int(k): v for k, v in self.state.kept.items()}
        kept[self.state.step] = score
        sign = -1 if events.HIGHER_IS_BETTER[self.metric] else 1
        best = sorted(kept, key=lambda s: (sign * kept[s], -s))[: self.cfg.keep_best]
        latest = sorted(kept)[-self.cfg.keep_last:] if self.cfg.keep_last else []
        keep = set(best) | set(latest)
        if self.state.step in keep:
            ckpt.save_weights_checkpoint(self.paths.checkpoints / ckpt.step_checkpoint_name(self.state.step),
                                         self.model, self.model_config,
                                         {"step": self.state.step, "metric": self.metric, **scores})
        for step in set(kept) - keep:
            shutil.rmtree(self.paths.checkpoints / ckpt.step_checkpoint_name(step), ignore_errors=True)
        self.state.kept = {str(s): kept[s] for s in sorted(keep)}

    def _save_last(self) -> None:
        rng = self.dist.gather(_rng_state(self.device))  # every rank's dropout stream
        if not self.dist.is_main:
            return
        self.state.elapsed = self._elapsed()
        tensors, plain = ckpt.optimizer_to_tensors(self.optimizer.state_dict())
        if self.ema is not None:
            tensors.update(self.ema.tensors())
        for rank, states in enumerate(rng):
            for name, t in states.items():
                tensors[f"rng.{rank}.{name}"] = t
        state = {"step": self.state.step, "train_state": asdict(self.state), "optimizer": plain,
                 "world_size": self.dist.world_size, "precision": self.cfg.precision,
                 "scaler": self.scaler.state_dict() if self.scaler is not None else None}
        ckpt.save_training_checkpoint(self.paths.last, self.model, self.model_config, tensors, state)
        self.on_event(events.CheckpointSaved(self.state.step, round(self._elapsed(), 3), str(self.paths.last)))

    def _restore_rng(self, tensors: dict, saved_world: int) -> None:
        prefix = f"rng.{self.dist.rank}."
        mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        if saved_world == self.dist.world_size and "torch" in mine:
            torch.set_rng_state(mine["torch"])
            if "cuda" in mine and self.device.type == "cuda":
                torch.cuda.set_rng_state(mine["cuda"], self.device)
        else:  # a different number of ranks: a fresh, still reproducible stream per rank
            torch.manual_seed(int(np.random.SeedSequence([self.state.step, self.dist.rank]).generate_state(1)[0]))


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states
