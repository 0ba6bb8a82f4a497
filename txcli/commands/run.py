"""Open a run directory: the resolved recipe, the tokenizers and the model, as later commands need them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from .. import safe_yaml
from ..checkpoint import MODEL_FILE, RECIPE_FILE, load_model_state
from ..errors import TxError
from ..model import ModelConfig, Seq2SeqTransformer
from ..recipe import Recipe, recipe_from_plain
from ..tokenizer import PAD_ID, SubwordTokenizer
from .tokenize import load_tokenizers


@dataclass
class Run:
    run_dir: Path
    recipe: Recipe
    src_tok: SubwordTokenizer
    tgt_tok: SubwordTokenizer
    model: Seq2SeqTransformer
    device: torch.device


def model_config(recipe: Recipe, src_vocab: int, tgt_vocab: int) -> ModelConfig:
    """The model's own config from a recipe and the trained vocabularies."""
    m = recipe.model
    joint = recipe.tokenizer.joint
    return ModelConfig(
        src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab, d_model=m.d_model, heads=m.heads, ff=m.ff,
        encoder_layers=m.encoder_layers, decoder_layers=m.decoder_layers, dropout=m.dropout,
        pre_norm=m.norm == "pre", activation=m.activation,
        share_embeddings=m.tie_embeddings and joint, tie_output=m.tie_embeddings,
        max_positions=max(1024, recipe.data.max_len + 2), pad_id=PAD_ID,
    )


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TxError("device 'cuda' asked for, but no CUDA device is available")
    return torch.device(name)


def read_run_recipe(run_dir: Path) -> Recipe:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TxError(f"{run_dir}: no such run directory")
    path = run_dir / RECIPE_FILE
    if not path.is_file():
        raise TxError(f"{path}: missing: not a tx run directory")
    try:
        data = safe_yaml.load(safe_yaml.read_text(path))
    except (yaml.YAMLError, UnicodeDecodeError, safe_yaml.Refused, OSError) as err:
        raise TxError(f"{path}: damaged ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise TxError(f"{path}: damaged (not a mapping)")
    return recipe_from_plain(data, str(path))


def load_model_file(path: Path, device: torch.device) -> Seq2SeqTransformer:
    """Build the model from the config stored in the weights file and load the weights (no pickle)."""
    config, state, _ = load_model_state(path, device)
    try:
        model = Seq2SeqTransformer(ModelConfig.from_dict(config))
        model.load_state_dict(state, strict=True)
    except (ValueError, TypeError, RuntimeError, KeyError) as err:
        raise TxError(f"{path}: weights do not match their model configuration ({str(err).splitlines()[0]})") from None
    return model.to(device).eval()


def open_run(run_dir: Path, device: str = "auto", weights: Path | None = None) -> Run:
    run_dir = Path(run_dir)
    recipe = read_run_recipe(run_dir)
    src_tok, tgt_tok = load_tokenizers(run_dir, recipe.tokenizer.joint)
    dev = pick_device(device)
    path = Path(weights) if weights is not None else run_dir / MODEL_FILE
    if not path.is_file():
        raise TxError(f"{path}: missing (train a model first: tx train RECIPE)")
    model = load_model_file(path, dev)
    if model.cfg.src_vocab_size != src_tok.vocab_size or model.cfg.tgt_vocab_size != tgt_tok.vocab_size:
        raise TxError(f"{path}: vocabulary sizes do not match the run's tokenizers")
    return Run(run_dir, recipe, src_tok, tgt_tok, model, dev)
