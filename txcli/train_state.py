"""Where a training run stands and what its checkpoints keep beside the weights: TrainState
(saved as JSON in every checkpoint), the run directory's checkpoint paths, the data feed and its
position, which step checkpoints stay, what checkpoints/last holds, and each rank's
random-number state (its dropout stream)."""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from . import checkpoint as ckpt
from .batching import Batch, BatchStream, EpochStats
from .errors import TxError


@dataclass
class TrainState:
    """Where training stands; saved as JSON in every checkpoint."""

    step: int = 0
    epoch: int = 1
    batches_done: int = 0  # global batches (all ranks) of the current epoch already trained on
    pool: int = 0          # the pool of the epoch training is in (0-based) ...
    pool_batches: int = 0  # ... and the batches of it each rank trained on: where a resume starts
    epoch_data: dict = field(default_factory=dict)  # the epoch's numbers so far (batching.EpochStats.to_dict)
    elapsed: float = 0.0   # seconds of training, summed over every session of this run
    best_score: Optional[float] = None
    best_step: int = 0
    bad_validations: int = 0
    validated_step: int = -1
    kept: dict = field(default_factory=dict)  # "step" -> score of each step-NNNNNN checkpoint

    def position(self) -> "DataPosition":
        return DataPosition(self.epoch, self.pool, self.pool_batches, self.batches_done, self.epoch_data)

    def move_to(self, p: "DataPosition") -> None:
        self.epoch, self.pool, self.pool_batches, self.batches_done, self.epoch_data = (
            p.epoch, p.pool, p.pool_batches, p.batches_done, p.epoch_data)


@dataclass
class DataPosition:
    """Where in the data training stands: a checkpoint keeps it, and a resume rebuilds only the
    pool it names."""

    epoch: int
    pool: int
    pool_batches: int
    batches_done: int
    epoch_data: dict


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

    def step_checkpoint(self, step: int) -> Path:
        return self.checkpoints / ckpt.step_checkpoint_name(step)


def steps_to_keep(scores: dict[int, float], higher_is_better: bool, keep_best: int, keep_last: int) -> set[int]:
    """The step checkpoints that stay: the best `keep_best` by score (the later step first on a
    tie), and the latest `keep_last`."""
    sign = -1 if higher_is_better else 1
    best = sorted(scores, key=lambda s: (sign * scores[s], -s))[:keep_best]
    latest = sorted(scores)[-keep_last:] if keep_last else []
    return set(best) | set(latest)


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """This process's random-number state: torch's generator, and the device's on CUDA."""
    states = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def rng_tensors(per_rank: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Every rank's rng_state, named rng.RANK.NAME among a checkpoint's trainer tensors."""
    return {f"rng.{rank}.{name}": t for rank, states in enumerate(per_rank) for name, t in states.items()}


def restore_rng(tensors: dict, rank: int, world_size: int, saved_world: int, step: int,
                device: torch.device) -> None:
    """This rank's saved state back; with a different number of ranks than the checkpoint's, a
    fresh, still reproducible stream per rank instead."""
    prefix = f"rng.{rank}."
    mine = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    if saved_world == world_size and "torch" in mine:
        torch.set_rng_state(mine["torch"])
        if "cuda" in mine and device.type == "cuda":
            torch.cuda.set_rng_state(mine["cuda"], device)
    else:
        torch.manual_seed(int(np.random.SeedSequence([step, rank]).generate_state(1)[0]))


class DataFeed:
    """The training batches of this rank in order, epoch after epoch, and the data position after
    each pull, which a checkpoint keeps for resuming."""

    def __init__(self, stream: BatchStream, device: torch.device, world_size: int,
                 on_epoch_end: Callable[[int, EpochStats], None]):
        self.stream, self.device, self.world_size, self.on_epoch_end = stream, device, world_size, on_epoch_end
        self._batches: Optional[Iterator] = None
        self._stats = EpochStats()

    def pull(self, n: int, at: DataPosition) -> tuple[list[Batch], DataPosition]:
        """The next n batches from position `at`, and the position after them."""
        epoch, pool, k, done = at.epoch, at.pool, at.pool_batches, at.batches_done
        if self._batches is None:
            self._stats = EpochStats.from_dict(at.epoch_data)
            self._batches = self.stream.epoch(epoch, pool, k, self._stats)
        out = []
        while len(out) < n:
            item = next(self._batches, None)
            if item is None:
                if self._stats.batches == 0:
                    raise TxError("no training pairs left after filtering (see data.max_len and data.filters)")
                self.on_epoch_end(epoch, self._stats)
                epoch, pool, k, done = epoch + 1, 0, 0, 0
                self._stats = EpochStats()
                self._batches = self.stream.epoch(epoch, stats=self._stats)
                continue
            batch, (pool, k) = item
            out.append(batch.to(self.device))
            done += self.world_size
        return out, DataPosition(epoch, pool, k, done, self._stats.to_dict())

    def close(self) -> None:
        self.stream.close()


def keep_step_checkpoint(state: TrainState, paths: RunPaths, score: float, higher_is_better: bool,
                         keep_best: int, keep_last: int, save: Callable[[Path], None]) -> None:
    """Save step-NNNNNN (through `save`) if it is among the best `keep_best` or the latest
    `keep_last`; delete the step checkpoints that no longer are; state.kept records those that stay."""
    kept = {int(k): v for k, v in state.kept.items()}
    kept[state.step] = score
    keep = steps_to_keep(kept, higher_is_better, keep_best, keep_last)
    if state.step in keep:
        save(paths.step_checkpoint(state.step))
    for step in set(kept) - keep:
        shutil.rmtree(paths.step_checkpoint(step), ignore_errors=True)
    state.kept = {str(s): kept[s] for s in sorted(keep)}


def last_checkpoint_contents(state: TrainState, optimizer: torch.optim.Optimizer, ema, rng: list[dict],
                             world_size: int, precision: str, scaler) -> tuple[dict, dict]:
    """(trainer tensors, state.json) of checkpoints/last: AdamW's state, the EMA weights, every
    rank's RNG state, and where training stands."""
    tensors, plain = ckpt.optimizer_to_tensors(optimizer.state_dict())
    if ema is not None:
        tensors.update(ema.tensors())
    tensors.update(rng_tensors(rng))
    saved = {"step": state.step, "train_state": asdict(state), "optimizer": plain, "world_size": world_size,
             "precision": precision, "scaler": scaler.state_dict() if scaler is not None else None}
    return tensors, saved
