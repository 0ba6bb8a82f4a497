"""`tx train`: recipe -> tokenizer (if the run has none) -> model, data, trainer -> run directory.

Works the same alone and under `torchrun --nproc_per_node=N`: with WORLD_SIZE > 1 in the
environment every process trains its share of the batches with DistributedDataParallel, and
only rank 0 writes files and reports progress.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .. import checkpoint as ckpt
from .. import events
from ..batching import encode_pairs
from ..compiled import resolve_compile
from ..data import read_pairs
from ..distributed import Dist
from ..errors import TxError, UsageError
from ..model import Seq2SeqTransformer
from ..model_schema import first_difference, max_positions
from ..precision import resolve_precision
from ..process import apply_process_settings
from ..schema import Recipe, dump_yaml
from ..resume import init_from, resume_training
from ..training import Trainer
from ..validation import Validator
from .run import load_tokenizers, model_config, pick_device, read_run_recipe, train_tokenizers
from .train_data import tokenizer_threads_off, training_stream

MODEL_SECTIONS = ("model", "tokenizer")  # recipe sections that decide the model: resume and init_from keep them


@dataclass
class TrainResult:
    reason: str  # max_steps | max_minutes | target | early_stop | interrupted
    signal: Optional[str]
    step: int
    metric: str
    best_step: int
    best_score: Optional[float]
    run_dir: Path
    elapsed: float
    rank: int  # only rank 0 reports
    model: torch.nn.Module  # the weights as training left them (the last step, not the best)


def train(recipe: Recipe, resume: bool = False,
          progress: Callable[[events.Event], None] = lambda e: None) -> TrainResult:
    """Train the recipe's model into its run directory (see module docstring). The process
    settings training runs under (threads, OpenMP, heap: txcli/process.py) are undone at the end."""
    undo_settings = apply_process_settings(recipe.train.threads)
    dist = _init_distributed(recipe.train.device)
    try:
        return _train(recipe, resume, progress, dist)
    finally:
        if dist.world_size > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        undo_settings()


def _train(recipe: Recipe, resume: bool, progress, dist: Dist) -> TrainResult:
    run_dir = recipe.run_dir
    cfg = recipe.train
    notice = _check_run_dir(recipe, resume)  # on every rank (it only reads), so that all fail alike
    source = None if resume else init_source(recipe)  # a resumed run goes on from its own checkpoint
    device = _device(cfg.device, dist)
    if cfg.precision == "fp16" and device.type != "cuda":
        raise UsageError(f"train.precision fp16 needs CUDA, and training runs on {device.type}; use bf16")
    precision, precision_warning = resolve_precision(cfg.precision, device)
    cfg = cfg.model_copy(update={"precision": precision,  # what the trainer runs in: auto resolved
                                 "compile": resolve_compile(cfg.compile, device)})
    if source is not None and dist.is_main:
        _copy_tokenizers(source.run_dir, recipe)
    src_tok, tgt_tok = _tokenizers(recipe, dist, progress)

    torch.manual_seed(recipe.seed)  # the same initial weights on every rank and every fresh run
    mcfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    model = Seq2SeqTransformer(mcfg).to(device)
    train_model = _wrap_ddp(model, device, dist)
    torch.manual_seed(recipe.seed * 1000 + dist.rank)  # dropout differs between ranks

    stream = training_stream(recipe, src_tok, tgt_tok, dist)
    with tokenizer_threads_off(), contextlib.closing(stream):  # the background pool thread and the corpora
        validator = _validator(recipe, src_tok, tgt_tok, device) if dist.is_main else None
        sink = RunLog(run_dir, progress, recipe.train.tensorboard) if dist.is_main else None
        trainer = Trainer(model, mcfg.to_dict(), cfg, stream, validator, run_dir, device, dist,
                          on_event=sink.event if sink else (lambda e: None), train_model=train_model)
        if resume:
            resume_training(trainer, run_dir / ckpt.CHECKPOINTS / ckpt.LAST_CHECKPOINT)
        elif source is not None:
            init_from(trainer, source.weights, cfg.init_reset, source.checkpoint)
        if sink:
            sink.open(resume_step=trainer.state.step if resume else None)
            ckpt.write_text_atomic(run_dir / ckpt.RECIPE_FILE, dump_yaml(recipe.to_plain()))
            target = cfg.stop_at and (f"{cfg.stop_at.metric} {'>=' if events.HIGHER_IS_BETTER[cfg.stop_at.metric] else '<='} "
                                      f"{cfg.stop_at.value:g}")
            sink.event(events.Setup(sum(p.numel() for p in model.parameters()), cfg.max_steps, cfg.max_minutes,
                                    resume, validator.size if validator else 0, target or None, cfg.compile))
            leftovers = ckpt.remove_interrupted_writes(run_dir)  # a save killed half-way (kill -9) left these
            if leftovers:
                notice = "; ".join(filter(None, [notice, f"removed {len(leftovers)} half-written file(s) a killed save "
                                                          f"left behind: {', '.join(p.name for p in leftovers)}"]))
            for warning in (notice, precision_warning and f"train.precision {precision_warning}"):
                if warning:
                    sink.event(events.Notice(warning))
            if source is not None:
                sink.event(events.InitFrom(trainer.state.step, str(source.weights), cfg.init_reset))
        caught: dict = {}
        try:
            with _stop_on_signals(trainer, caught):
                reason = trainer.fit()
        finally:
            if sink:
                sink.close()
        if reason == "nan":
            raise TxError(trainer.nan_message)
        s = trainer.state
        return TrainResult(reason, caught.get("name"), s.step, trainer.metric, s.best_step, s.best_score,
                           run_dir, s.elapsed, dist.rank, model)


# --------------------------------------------------------------------------- setup


def _check_run_dir(recipe: Recipe, resume: bool) -> Optional[str]:
    """Refuse what would lose or mix up work; returns a notice for changes a resume tolerates."""
    run_dir = recipe.run_dir
    last = ckpt.resolve_checkpoint_dir(run_dir / ckpt.CHECKPOINTS / ckpt.LAST_CHECKPOINT)
    if resume:
        if not last.is_dir():
            raise UsageError(f"{run_dir}: nothing to resume (no {ckpt.CHECKPOINTS}/{ckpt.LAST_CHECKPOINT}); "
                             "start the run without --resume")
        saved = read_run_recipe(run_dir)
        take_left_out_sections(recipe, saved)
        for section in MODEL_SECTIONS:
            if section_difference(recipe, saved, section) is not None:
                raise UsageError(f"{run_dir / ckpt.RECIPE_FILE}: '{section}' differs from the recipe given; "
                                 "a resumed run must keep the model and tokenizer it started with")
        changed = [name for name, old, new in _data_order_keys(saved, recipe) if old != new]
        if changed:
            return (f"resuming with a different {', '.join(changed)}: the batches from here on differ "
                    "from those the run would have seen")
        return None
    if last.is_dir() or (run_dir / ckpt.MODEL_FILE).exists():
        raise UsageError(f"{run_dir}: already holds a trained run; continue it with --resume, "
                         "or set another run_dir (e.g. --set run_dir=runs/NEW)")


@dataclass
class InitSource:
    """Where `train.init_from` points: the source run, the weights file, and the checkpoint
    directory whose step and optimizer state `init_reset` optimizer/none carry over."""

    run_dir: Path
    weights: Path
    checkpoint: Optional[Path]


def init_source(recipe: Recipe) -> Optional[InitSource]:
    """Check `train.init_from` against the recipe (only reads: the source run is never written
    to). A run directory gives its model.safetensors (the best weights) with init_reset all,
    else its checkpoints/last; a checkpoint directory gives itself."""
    path, reset = recipe.train.init_from, recipe.train.init_reset
    if path is None:
        return None
    key = "train.init_from"
    if not path.is_dir():
        raise UsageError(f"{key}: {path}: no such run or checkpoint directory (train that run first)")
    if path.resolve() == recipe.run_dir.resolve():
        raise UsageError(f"{key}: {path} is this run's own run_dir; continue it with --resume instead")
    if path.parent.name == ckpt.CHECKPOINTS and (path.parent.parent / ckpt.RECIPE_FILE).is_file():
        run_dir, checkpoint = path.parent.parent, ckpt.resolve_checkpoint_dir(path)
        weights = checkpoint / ckpt.CHECKPOINT_MODEL
    elif (path / ckpt.RECIPE_FILE).is_file():
        run_dir = path
        checkpoint = ckpt.resolve_checkpoint_dir(path / ckpt.CHECKPOINTS / ckpt.LAST_CHECKPOINT)
        weights = path / ckpt.MODEL_FILE if reset == "all" else checkpoint / ckpt.CHECKPOINT_MODEL
    else:
        raise UsageError(f"{key}: {path}: not a tx run directory (no {ckpt.RECIPE_FILE}) "
                         f"nor a checkpoint directory in one")
    if not weights.is_file():
        raise UsageError(f"{key}: {weights}: missing (the source run has no trained weights yet)")
    if reset != "all" and not (checkpoint / ckpt.CHECKPOINT_STATE).is_file():
        raise UsageError(f"{key}: {checkpoint}: no {ckpt.CHECKPOINT_STATE}; train.init_reset {reset} "
                         "needs a training checkpoint (use init_reset all)")
    if reset == "none" and not (checkpoint / ckpt.CHECKPOINT_TRAINER).is_file():
        raise UsageError(f"{key}: {checkpoint} holds no optimizer state (only checkpoints/last does); "
                         "train.init_reset none needs it")
    saved = read_run_recipe(run_dir)
    take_left_out_sections(recipe, saved)
    for section in MODEL_SECTIONS:
        name = section_difference(recipe, saved, section)
        if name is not None:
            mine, theirs = getattr(recipe, section).model_dump(), getattr(saved, section).model_dump()
            raise UsageError(f"{section}.{name}: {_shown(mine.get(name))} in the recipe, {_shown(theirs.get(name))} "
                             f"in {run_dir} (train.init_from needs the source run's {section} section)")
    positions = [max_positions(r.data.max_len) for r in (recipe, saved)]  # model_config's rule
    if positions[0] != positions[1]:
        raise UsageError(f"data.max_len: {recipe.data.max_len} in the recipe needs {positions[0]} positions, "
                         f"the model of {run_dir} has {positions[1]} (data.max_len {saved.data.max_len})")
    return InitSource(run_dir, weights, checkpoint if reset != "all" else None)


def section_difference(recipe: Recipe, saved: Recipe, section: str) -> Optional[str]:
    """The first key of a recipe section that differs from a saved run's (None: the same); the
    model and tokenizer sections decide the model, which resume and init_from must keep."""
    return first_difference(getattr(recipe, section).model_dump(), getattr(saved, section).model_dump())


def take_left_out_sections(recipe: Recipe, saved: Recipe) -> None:
    """A recipe that leaves out `model` or `tokenizer` takes them from the run it starts from or
    resumes (an imported pretrained model's, say): the weights decide them anyway."""
    for section in MODEL_SECTIONS:
        if section not in recipe.model_fields_set:
            setattr(recipe, section, getattr(saved, section).model_copy())


def _shown(value) -> str:
    return json.dumps(value) if isinstance(value, (bool, type(None))) else str(value)


def _copy_tokenizers(source: Path, recipe: Recipe) -> None:
    """The source run's tokenizer file(s) into the new run (the model's embeddings index them).
    A tokenizer already in the new run must be the same file."""
    joint = recipe.tokenizer.joint
    for theirs, mine in zip(ckpt.tokenizer_files(source, joint), ckpt.tokenizer_files(recipe.run_dir, joint)):
        if not theirs.is_file():
            raise UsageError(f"train.init_from: {theirs}: missing: the source run has no tokenizer")
        data = theirs.read_bytes()
        if mine.is_file():
            if mine.read_bytes() != data:
                raise UsageError(f"{mine}: differs from {theirs}; a run initialised from {source} "
                                 "must use its tokenizer (remove this one or set another run_dir)")
            continue
        ckpt.write_bytes_atomic(mine, data)


def _data_order_keys(saved: Recipe, new: Recipe):
    """What decides the batch sequence: the position saved in a checkpoint counts batches of it."""
    for name, get in (("seed", lambda r: r.seed), ("data.train", lambda r: r.data.train),
                      ("data.max_len", lambda r: r.data.max_len), ("data.filters", lambda r: r.data.filters),
                      ("data.sampling", lambda r: r.data.sampling), ("train.batch_tokens", lambda r: r.train.batch_tokens),
                      ("train.pool_size", lambda r: r.train.pool_size)):
        yield name, get(saved), get(new)


def _tokenizers(recipe: Recipe, dist: Dist, progress):
    src_path, tgt_path = ckpt.tokenizer_files(recipe.run_dir, recipe.tokenizer.joint)
    if dist.is_main and not (src_path.is_file() and tgt_path.is_file()):
        progress(events.TokenizerTraining(f"training {recipe.tokenizer.kind} tokenizer "
                                          f"({recipe.tokenizer.vocab_size} subwords)"))
        train_tokenizers(recipe, force=True)
    dist.barrier()
    return load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)


def _init_distributed(device_name: str) -> Dist:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    backend = "nccl" if pick_device(device_name).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    torch.distributed.init_process_group(backend)
    return Dist(rank=rank, world_size=world)


def _device(name: str, dist: Dist) -> torch.device:
    device = pick_device(name)
    if device.type == "cuda" and dist.world_size > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def _wrap_ddp(model: torch.nn.Module, device: torch.device, dist: Dist) -> torch.nn.Module:
    if dist.world_size == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)  # broadcasts rank 0's initial weights


def _validator(recipe: Recipe, src_tok, tgt_tok, device) -> Validator:
    pairs = list(read_pairs(recipe.data.valid))
    kept: list[int] = []
    encoded, _ = encode_pairs(pairs, src_tok.encode_batch, tgt_tok.encode_batch, recipe.data.max_len, kept)
    if len(encoded) == 0:
        raise UsageError(f"{recipe.data.valid.files()[0]}: no validation pairs within data.max_len")
    refs = [pairs[i][1] for i in kept]
    return Validator(encoded, refs, tgt_tok.decode_batch, recipe.decode.batch_tokens,
                     recipe.decode.max_len_a, recipe.decode.max_len_b, recipe.train.valid_max_sentences,
                     device)


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer, caught: dict):
    """SIGINT/SIGTERM ask the trainer to save and stop after the current step; a second one
    acts at once (the checkpoint on disk stays whole: every write is atomic)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        caught.setdefault("name", signal.Signals(signum).name)
        trainer.request_stop(signal.Signals(signum).name)
        signal.signal(signum, previous[signum])

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- run files


class RunLog:
    """Turns trainer events into metrics.jsonl (one JSON object a line), train.log (for people),
    TensorBoard scalars when asked for, and the caller's progress callback."""

    def __init__(self, run_dir: Path, progress: Callable[[events.Event], None], tensorboard: bool):
        self.run_dir, self.progress, self.want_tensorboard = Path(run_dir), progress, tensorboard
        self.metrics = self.log = self.tb = None

    def open(self, resume_step: Optional[int]) -> None:
        metrics_path = self.run_dir / ckpt.METRICS_FILE
        if resume_step is None:
            ckpt.write_text_atomic(metrics_path, "")
        else:  # drop what was logged after the checkpoint: those steps are trained again
            ckpt.write_text_atomic(metrics_path, "".join(_lines_up_to(metrics_path, resume_step)))
        self.metrics = open(metrics_path, "a", encoding="utf-8")
        self.log = open(self.run_dir / ckpt.LOG_FILE, "a" if resume_step is not None else "w", encoding="utf-8")
        if self.want_tensorboard:
            self.tb = _tensorboard_writer(self.run_dir / "tensorboard", self)

    def event(self, e: events.Event) -> None:
        if e.in_metrics and self.metrics is not None:
            self.metrics.write(json.dumps(e.to_dict()) + "\n")  # one write per line: readers never see half a record
            self.metrics.flush()
        if self.log is not None:
            self.log.write(time.strftime("%Y-%m-%d %H:%M:%S ") + e.describe() + "\n")
            self.log.flush()
        if self.tb is not None and isinstance(e, (events.Log, events.Validation)):
            prefix = "train" if isinstance(e, events.Log) else "valid" if e.weights == "model" else "valid_ema"
            for key in ("loss", "lr", "tokens_per_s", "ppl", "bleu", "chrf"):
                if hasattr(e, key):
                    self.tb.add_scalar(f"{prefix}/{key}", getattr(e, key), e.step)
        self.progress(e)

    def close(self) -> None:
        for f in (self.metrics, self.log, self.tb):
            if f is not None:
                f.close()


def _lines_up_to(path: Path, step: int) -> list[str]:
    if not path.is_file():
        return []
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
        except json.JSONDecodeError:
            continue  # a line cut short by a crash
    return kept


def _tensorboard_writer(path: Path, log: RunLog):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.event(events.Notice("train.tensorboard is set but the tensorboard package "
                                "is not installed (pip install tensorboard); skipping it"))
        return None
    return SummaryWriter(str(path))
