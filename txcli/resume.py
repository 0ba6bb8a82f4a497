"""Where a Trainer starts from, when not from fresh weights: its own run's last checkpoint
(resume: everything, the data position included), or another run's weights (continued
training: the weights, and with init_reset optimizer/none the step count and AdamW's state)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

from . import checkpoint as ckpt
from .errors import TxError
from .model_schema import first_difference
from .optim import load_optimizer_state
from .train_state import TrainState, restore_rng

if TYPE_CHECKING:
    from .training import Trainer


def resume_training(trainer: Trainer, path: Path) -> None:
    """Weights, optimizer, scaler, EMA, RNG and data position from a checkpoint directory."""
    config, weights, tensors, saved = ckpt.load_training_checkpoint(path)
    where = ckpt.resolve_checkpoint_dir(path)
    if first_difference(config, trainer.model_config) is not None:
        raise TxError(f"{where}: its model configuration differs from the recipe's; "
                      "resume with the recipe the run was started with")
    try:
        trainer.model.load_state_dict(weights, strict=True)
        trainer.state = TrainState(**saved["train_state"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise TxError(f"{where}: damaged checkpoint ({str(err).splitlines()[0]})") from None
    load_optimizer_state(trainer.optimizer, tensors, saved, where)
    if trainer.scaler is not None and saved.get("scaler"):
        trainer.scaler.load_state_dict(saved["scaler"])
    if trainer.ema is not None and not trainer.ema.load(tensors):
        trainer.ema.reset(trainer.model)  # train.ema switched on for the resumed run: start it here
    dist = trainer.dist
    saved_world = saved.get("world_size", 1)
    if saved_world != dist.world_size:  # the shares of a pool differ: skip as many pairs, roughly
        trainer.state.pool_batches = -(-trainer.state.pool_batches * saved_world // dist.world_size)
    restore_rng(tensors, dist.rank, dist.world_size, saved_world, trainer.state.step, trainer.device)


def init_from(trainer: Trainer, weights: Path, reset: str, checkpoint: Optional[Path]) -> None:
    """Continued training: another run's weights; with reset 'optimizer' also its step count
    (the schedule goes on from there), with 'none' also its AdamW state. The data position,
    best score and kept checkpoints start fresh: they belong to the source run's data."""
    config, state, _ = ckpt.load_model_state(weights)
    mine = trainer.model_config
    key = first_difference(config, mine)
    if key is not None:
        raise TxError(f"{weights}: model {key} is {config.get(key)}, this run's is {mine.get(key)} "
                      "(train.init_from needs the same model)")
    try:
        trainer.model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise TxError(f"{weights}: weights do not match ({str(err).splitlines()[0]})") from None
    if reset in ("optimizer", "none") and checkpoint is not None:
        saved = ckpt.read_json(checkpoint / ckpt.CHECKPOINT_STATE)
        trainer.state = TrainState(step=int(saved.get("step", 0)))
        if reset == "none":
            tensors, _ = ckpt.load_tensors(checkpoint / ckpt.CHECKPOINT_TRAINER)
            load_optimizer_state(trainer.optimizer, tensors, saved, checkpoint)
    if trainer.ema is not None:
        trainer.ema.reset(trainer.model)
