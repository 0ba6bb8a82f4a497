"""Run-directory I/O: atomic writes, safetensors weights, JSON state.

Nothing here unpickles: weights are safetensors, everything else is JSON or YAML, so loading a
model can never execute code from the file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes

from .errors import TxError

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


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, value: Any) -> None:
    write_text_atomic(path, json.dumps(value, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TxError(f"{path}: missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise TxError(f"{path}: damaged JSON ({err})") from None


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
    return config, tensors, meta
