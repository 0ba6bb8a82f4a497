"""`tx inspect`: what a run directory holds, as plain data the CLI can print or dump as JSON.

The recipe, the vocabulary sizes, parameters per module, the training history from
metrics.jsonl and the saved checkpoints. Every part is optional but the recipe: a run that has a
tokenizer but no model yet, or a model but no training history, is summarised as far as it goes.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from ..checkpoint import (CHECKPOINT_STATE, CHECKPOINTS, METRICS_FILE, MODEL_FILE, list_step_checkpoints, read_json,
                          write_bytes_atomic)
from ..errors import TxError, UsageError
from ..events import HIGHER_IS_BETTER, SCORE_KEYS
from .import_marian import IMPORT_RECORD
from .run import load_model_file, load_tokenizers, read_run_recipe


@dataclass
class ModuleParams:
    name: str          # "encoder", "encoder.0", "encoder.0.self_attn", ...
    params: int        # parameters first owned by this module (shared tensors count once)
    shared_from: list[str] = field(default_factory=list)  # tensors it reuses from other modules


@dataclass
class BestScore:
    metric: str
    value: float
    step: int


@dataclass
class History:
    steps: int = 0              # last logged training step
    epochs: Optional[float] = None
    elapsed_s: Optional[float] = None
    last_loss: Optional[float] = None
    last_lr: Optional[float] = None
    tokens_per_s: Optional[float] = None  # mean over the logged steps
    peak_rss_mb: Optional[float] = None  # the training process's peak resident memory, as logged
    validations: int = 0
    last_valid: dict = field(default_factory=dict)
    best: list[BestScore] = field(default_factory=list)
    unreadable_lines: int = 0   # e.g. a line half written by a training run in progress


@dataclass
class Checkpoint:
    name: str
    step: Optional[int]
    scores: dict


@dataclass
class RunSummary:
    run_dir: str
    recipe: dict
    vocab: Optional[dict] = None          # {"source": n, "target": n, "joint": bool}
    model_file: Optional[str] = None
    model_bytes: Optional[int] = None
    modules: list[ModuleParams] = field(default_factory=list)
    total_params: Optional[int] = None
    history: Optional[History] = None
    checkpoints: list[Checkpoint] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what is missing, in words
    init_from: Optional[str] = None  # train.init_from: the run it was started from
    imported: Optional[dict] = None  # an imported run's import.json: where it came from

    def to_json(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- parameters


def count_parameters(named: list[tuple[str, object]], depth: int = 3) -> tuple[list[ModuleParams], int]:
    """Parameters per module prefix (up to `depth` name parts), in model order, from
    `named_parameters(remove_duplicate=False)`: a tied tensor is listed under every name but
    counts only for the first; the others record where they share it from."""
    first_name: dict[int, str] = {}
    for name, tensor in named:
        first_name.setdefault(id(tensor), name)
    rows: "OrderedDict[str, ModuleParams]" = OrderedDict()
    for name, tensor in named:
        owner = first_name[id(tensor)]
        parts = name.split(".")[:-1]  # drop "weight" / "bias"
        for k in range(1, min(depth, len(parts)) + 1):
            row = rows.setdefault(".".join(parts[:k]), ModuleParams(".".join(parts[:k]), 0))
            shared = owner.rsplit(".", 1)[0]
            if owner == name:
                row.params += tensor.numel()
            elif shared not in row.shared_from:
                row.shared_from.append(shared)
    total = sum(tensor.numel() for name, tensor in named if first_name[id(tensor)] == name)
    return list(rows.values()), total


# --------------------------------------------------------------------------- history


def read_history(path: Path) -> Optional[History]:
    """Summarise metrics.jsonl ({"event": "log"|"valid", ...} per line); None if absent."""
    if not path.is_file():
        return None
    h = History()
    tokens_per_s = []
    best: dict[str, BestScore] = {}
    with open(path, "rb") as f:
        for raw in f:
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                h.unreadable_lines += 1
                continue
            if not isinstance(event, dict):
                h.unreadable_lines += 1
            elif event.get("event") == "log":
                _add_log(h, event, tokens_per_s)
            elif event.get("event") == "valid" and event.get("weights", "model") == "model":
                _add_valid(h, event, best)  # the trained weights' (train.ema adds the average's)
    if tokens_per_s:
        h.tokens_per_s = sum(tokens_per_s) / len(tokens_per_s)
    h.best = [best[k] for k in SCORE_KEYS if k in best]
    return h


def _number(value) -> Optional[float]:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _add_log(h: History, event: dict, tokens_per_s: list) -> None:
    h.steps = max(h.steps, int(_number(event.get("step")) or 0))
    for attr, key in (("epochs", "epoch"), ("elapsed_s", "elapsed"), ("last_loss", "loss"), ("last_lr", "lr")):
        if _number(event.get(key)) is not None:
            setattr(h, attr, _number(event[key]))
    if _number(event.get("tokens_per_s")) is not None:
        tokens_per_s.append(_number(event["tokens_per_s"]))
    peak = _number(event.get("peak_rss_mb"))
    if peak is not None:
        h.peak_rss_mb = max(peak, h.peak_rss_mb or 0.0)  # the highest over every session of the run


def _add_valid(h: History, event: dict, best: dict) -> None:
    h.validations += 1
    step = int(_number(event.get("step")) or 0)
    h.steps = max(h.steps, step)
    if _number(event.get("elapsed")) is not None:
        h.elapsed_s = max(h.elapsed_s or 0.0, _number(event["elapsed"]))
    h.last_valid = {k: event[k] for k in ("step",) + SCORE_KEYS if _number(event.get(k)) is not None}
    for key in SCORE_KEYS:
        value = _number(event.get(key))
        if value is None:
            continue
        old = best.get(key)
        better = old is None or (value > old.value if HIGHER_IS_BETTER[key] else value < old.value)
        if better:
            best[key] = BestScore(key, value, step)


# --------------------------------------------------------------------------- the summary


def _checkpoints(run_dir: Path) -> list[Checkpoint]:
    found = []
    for step, path in list_step_checkpoints(run_dir / CHECKPOINTS):
        state = _state(path)
        found.append(Checkpoint(path.name, step, {k: state[k] for k in SCORE_KEYS if _number(state.get(k)) is not None}))
    last = run_dir / CHECKPOINTS / "last"
    if last.is_dir():
        state = _state(last)
        found.append(Checkpoint("last", state.get("step") if isinstance(state.get("step"), int) else None, {}))
    return found


def _state(path: Path) -> dict:
    try:
        state = read_json(path / CHECKPOINT_STATE)
    except TxError:
        return {}
    return state if isinstance(state, dict) else {}


def inspect_run(run_dir: Path) -> RunSummary:
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir)
    summary = RunSummary(run_dir=str(run_dir), recipe=recipe.to_plain())
    if recipe.train.init_from is not None:
        summary.init_from = f"{recipe.train.init_from} (init_reset {recipe.train.init_reset})"
    try:
        src_tok, tgt_tok = load_tokenizers(run_dir, recipe.tokenizer.joint)
        summary.vocab = {"source": src_tok.vocab_size, "target": tgt_tok.vocab_size, "joint": recipe.tokenizer.joint}
    except TxError as err:
        summary.notes.append(f"no tokenizer: {err}")
    model_path = run_dir / MODEL_FILE
    if model_path.is_file():
        model = load_model_file(model_path, torch.device("cpu"))
        summary.model_file, summary.model_bytes = str(model_path), model_path.stat().st_size
        summary.modules, summary.total_params = count_parameters(list(model.named_parameters(remove_duplicate=False)))
    else:
        summary.notes.append(f"no model yet ({MODEL_FILE} is missing)")
    summary.history = read_history(run_dir / METRICS_FILE)
    if summary.history is None:
        summary.notes.append(f"no training history ({METRICS_FILE} is missing)")
    summary.checkpoints = _checkpoints(run_dir)
    summary.imported = _import_record(run_dir / IMPORT_RECORD, summary.notes)
    return summary


def _import_record(path: Path, notes: list[str]) -> Optional[dict]:
    """What `tx import` recorded (source directory, when, the files read and their sha256), or
    None for a run trained in tx; an unreadable record is a note, not an error."""
    if not path.is_file():
        return None
    try:
        record = read_json(path)
    except TxError as err:
        notes.append(str(err))
        return None
    if not isinstance(record, dict):
        notes.append(f"{path}: not a JSON object")
        return None
    return record


def positional_encoding_png(run_dir: Path, positions: Optional[int] = None) -> bytes:
    """Heatmap of the sinusoidal positional-encoding matrix the run's model adds to its embeddings
    (rows: positions up to the recipe's max_len + 2 unless given; columns: dimensions)."""
    from ..plots import positional_encoding_png as draw

    recipe = read_run_recipe(run_dir)
    return draw(positions or recipe.data.max_len + 2, recipe.model.d_model)


def plot_target_is_dir(path: Path) -> bool:
    """`tx inspect --plot PATH`: a .png path is the positional-encoding picture alone (as before);
    an existing directory or a path without the .png suffix is a folder for pe.png and the curves."""
    path = Path(path)
    return path.is_dir() or path.suffix.lower() != ".png"


def write_run_plots(run_dir: Path, folder: Path, positions: Optional[int] = None) -> list[Path]:
    """pe.png and every training curve of the run into `folder` (made if missing), each atomically."""
    from ..curves import curve_pngs

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--plot {folder}: not a folder (give a .png path for the positional encodings alone)")
    folder.mkdir(parents=True, exist_ok=True)
    pictures = {"pe.png": positional_encoding_png(run_dir, positions)}
    metrics = Path(run_dir) / METRICS_FILE
    if metrics.is_file():
        pictures.update(curve_pngs(metrics))
    written = []
    for name, data in pictures.items():
        write_bytes_atomic(folder / name, data)
        written.append(folder / name)
    return written


def write_plots(run_dir: Path, path: Path, positions: Optional[int] = None) -> list[Path]:
    """--plot: a .png path gets the positional-encoding heatmap; a folder (or a path without .png)
    gets it as pe.png beside the training curves from metrics.jsonl. Returns the files written."""
    if plot_target_is_dir(path):
        return write_run_plots(run_dir, path, positions)
    write_bytes_atomic(path, positional_encoding_png(run_dir, positions))
    return [path]
