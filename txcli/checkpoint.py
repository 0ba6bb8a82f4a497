"""Run-directory I/O: atomic writes, safetensors weights, JSON state.

Nothing here unpickles: weights are safetensors, everything else is JSON or YAML, so loading a
model can never execute code from the file.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .atomic import (open_atomic, read_json, write_bytes_atomic,  # noqa: F401 (re-exported)
                     write_dir_atomic, write_json_atomic, write_text_atomic)
from .errors import TxError
from .model_schema import current_keys

# The run directory's layout, in one place.
RECIPE_FILE = "recipe.yaml"
JOINT_TOKENIZER = "tokenizer.json"
SRC_TOKENIZER = "src_tokenizer.json"
TGT_TOKENIZER = "tgt_tokenizer.json"
MODEL_FILE = "model.safetensors"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"
LOG_FILE = "train.log"


def tokenizer_files(run_dir: Path, joint: bool) -> tuple[Path, Path]:
    run_dir = Path(run_dir)
    if joint:
        return run_dir / JOINT_TOKENIZER, run_dir / JOINT_TOKENIZER
    return run_dir / SRC_TOKENIZER, run_dir / TGT_TOKENIZER


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Atomic safetensors write. Tensors that share memory (tied embeddings) are stored once and
    their other names recorded in the metadata, since safetensors refuses shared storage."""
    unique: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    for name, tensor in tensors.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            aliases[name] = seen[key]
            continue
        seen[key] = name
        unique[name] = tensor.detach().contiguous().cpu()
    meta = dict(metadata or {})
    if aliases:
        meta["tx.aliases"] = json.dumps(aliases)
    write_bytes_atomic(path, safetensors_bytes(unique, metadata=meta))


def load_tensors(path: Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file written by `save_tensors`; a damaged file is a clear TxError."""
    path = Path(path)
    if not path.is_file():
        raise TxError(f"{path}: missing")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise TxError(f"{path}: damaged or truncated weights file ({err})") from None
    for name, target in json.loads(metadata.pop("tx.aliases", "{}")).items():
        tensors[name] = tensors[target]
    return tensors, metadata


def save_model(path: Path, model: torch.nn.Module, config: dict, extra: dict[str, str] | None = None) -> None:
    """Weights plus the model configuration (as JSON in the metadata): a self-describing file."""
    meta = {"tx.model_config": json.dumps(config, sort_keys=True)}
    meta.update(extra or {})
    save_tensors(path, model.state_dict(), meta)


def load_model_state(path: Path, device: str | torch.device = "cpu") -> tuple[dict, dict[str, torch.Tensor], dict]:
    """(model config dict, state dict, remaining metadata) from a file written by `save_model`."""
    tensors, meta = load_tensors(path, device)
    try:
        config = json.loads(meta.pop("tx.model_config"))
    except (KeyError, json.JSONDecodeError):
        raise TxError(f"{path}: not a tx model file (no model configuration in its metadata)") from None
    if isinstance(config, dict):  # files written before the config took the recipe's key names
        try:
            config = current_keys(config)
        except ValueError as err:
            raise TxError(f"{path}: damaged model configuration ({err})") from None
    return config, tensors, meta


# ---------------------------------------------------------------------------------------------
# training checkpoints: one directory each, written whole into a temp folder and renamed in place
#
#   checkpoints/last/           model.safetensors, trainer.safetensors (optimizer, RNG), state.json
#   checkpoints/step-000750/    model.safetensors, state.json (step and validation scores)

LAST_CHECKPOINT = "last"
CHECKPOINT_MODEL = "model.safetensors"
CHECKPOINT_TRAINER = "trainer.safetensors"
CHECKPOINT_STATE = "state.json"


def step_checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def resolve_checkpoint_dir(path: Path) -> Path:
    """The directory itself, or the complete previous one a crash mid-replacement left behind."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if not path.is_dir() and old.is_dir():
        return old
    return path


def remove_interrupted_writes(run_dir: Path) -> list[Path]:
    """Delete the temporaries that a write killed half-way left in a run directory (the
    `.NAME.XXXX.tmp` files and directories of `atomic`), in the run directory itself and in
    checkpoints/; returns what was removed. Called when training starts, the one moment nothing
    else of this run is writing. A `.NAME.old` directory is kept: `resolve_checkpoint_dir` may
    still need it."""
    import shutil

    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if not folder.is_dir():
            continue
        for child in sorted(folder.glob(".*.tmp")):
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            removed.append(child)
    return removed


def optimizer_to_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split `optimizer.state_dict()` into tensors (safetensors) and everything else (JSON)."""
    tensors, plain_state = {}, {}
    for index, param_state in state["state"].items():
        plain = {}
        for key, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                plain[key] = value
        plain_state[str(index)] = plain
    return tensors, {"param_groups": state["param_groups"], "state": plain_state}


def optimizer_from_tensors(tensors: dict[str, torch.Tensor], plain: dict) -> dict:
    """Inverse of `optimizer_to_tensors`: a dict for `optimizer.load_state_dict`."""
    state: dict[int, dict] = {int(i): dict(values) for i, values in plain["state"].items()}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": plain["param_groups"]}


def save_training_checkpoint(path: Path, model: torch.nn.Module, model_config: dict,
                             trainer_tensors: dict[str, torch.Tensor], state: dict) -> None:
    """Everything a resumed run needs, as one atomically written directory."""

    def write(tmp: Path) -> None:
        save_model(tmp / CHECKPOINT_MODEL, model, model_config)
        save_tensors(tmp / CHECKPOINT_TRAINER, trainer_tensors)
        write_json_atomic(tmp / CHECKPOINT_STATE, state)

    write_dir_atomic(path, write)


def save_weights_checkpoint(path: Path, model: torch.nn.Module, model_config: dict, state: dict) -> None:
    """Weights and a little JSON (step, scores): what averaging and picking the best need."""

    def write(tmp: Path) -> None:
        save_model(tmp / CHECKPOINT_MODEL, model, model_config)
        write_json_atomic(tmp / CHECKPOINT_STATE, state)

    write_dir_atomic(path, write)


def load_training_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """(model config, model state dict, trainer tensors, state JSON) of a checkpoint directory;
    anything missing or damaged is a TxError naming the file."""
    path = resolve_checkpoint_dir(path)
    if not path.is_dir():
        raise TxError(f"{path}: no checkpoint to resume from")
    state = read_json(path / CHECKPOINT_STATE)
    if not isinstance(state, dict) or "step" not in state:
        raise TxError(f"{path / CHECKPOINT_STATE}: damaged (no training step recorded)")
    config, weights, _ = load_model_state(path / CHECKPOINT_MODEL)
    trainer, _ = load_tensors(path / CHECKPOINT_TRAINER)
    return config, weights, trainer, state


def list_step_checkpoints(checkpoint_dir: Path) -> list[tuple[int, Path]]:
    """(step, directory) of every complete step-NNNNNN checkpoint, oldest first."""
    found = []
    for child in Path(checkpoint_dir).glob("step-*"):
        if child.is_dir() and child.name[5:].isdigit() and (child / CHECKPOINT_MODEL).is_file():
            found.append((int(child.name[5:]), child))
    return sorted(found)


def average_state_dicts(paths: list[Path]) -> tuple[dict, dict[str, torch.Tensor]]:
    """Element-wise mean of the weights in several model files (same configuration), summed in
    float64 so the order of the files does not change the result."""
    if not paths:
        raise TxError("no checkpoints to average")
    config, first, _ = load_model_state(paths[0])
    dtypes = {name: t.dtype for name, t in first.items()}
    total = {name: t.to(torch.float64) for name, t in first.items()}
    for path in paths[1:]:
        other_config, weights, _ = load_model_state(path)
        if other_config != config:
            raise TxError(f"{path}: model configuration differs from {paths[0]}; cannot average")
        if weights.keys() != total.keys():
            raise TxError(f"{path}: weight names differ from {paths[0]}; cannot average")
        for name, t in weights.items():
            total[name] += t.to(torch.float64)
    return config, {name: (t / len(paths)).to(dtypes[name]) for name, t in total.items()}
