"""The run directory as every command sees it: the resolved recipe, the tokenizers (trained into
it or loaded from it) and the model. Not a user action itself: the one module the action modules
share, so that none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Optional

import torch

from ..checkpoint import MODEL_FILE, RECIPE_FILE, load_model_state, tokenizer_files
from ..data import read_side
from ..decoding import DecodeOptions, Decoding, check_choice, resolve_decoding
from ..errors import TxError, UsageError
from ..model import ModelConfig, Seq2SeqTransformer
from ..recipe import Recipe, read_saved_recipe
from ..tokenizer import PAD_ID, SubwordTokenizer, train_tokenizer


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
    return read_saved_recipe(path)


def train_tokenizers(recipe: Recipe, force: bool = False) -> list[Path]:
    """Train (joint, or one per side) and save into the run directory; returns the files written."""
    run_dir = recipe.run_dir
    if (run_dir / MODEL_FILE).exists() and not force:
        raise UsageError(f"{run_dir}: already holds a trained model; a new tokenizer would not match it "
                         "(use --force to replace it anyway, or a new run_dir)")
    cfg = recipe.tokenizer
    src_path, tgt_path = tokenizer_files(run_dir, cfg.joint)

    def train(side):
        return train_tokenizer(read_side(recipe.data.train, side), cfg.kind, cfg.vocab_size,
                               cfg.min_frequency, cfg.lowercase)

    if cfg.joint:
        train(None).save(src_path)
        return [src_path]
    train("src").save(src_path)
    train("tgt").save(tgt_path)
    return [src_path, tgt_path]


def load_tokenizers(run_dir: Path, joint: bool) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    src_path, tgt_path = tokenizer_files(run_dir, joint)
    loaded = []
    for path in (src_path, tgt_path):
        if not path.is_file():
            raise TxError(f"{path}: missing (run `tx train-tokenizer` or `tx train` first)")
        try:
            loaded.append(SubwordTokenizer.load(path))
        except Exception as err:  # tokenizers raises plain Exception subclasses for bad JSON
            raise TxError(f"{path}: not a valid tokenizer file ({str(err).splitlines()[0]})") from None
    return loaded[0], loaded[1]


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


def open_for_decoding(run_dir: Path, device: str = "auto", threads: Optional[int] = None) -> Run:
    """open_run for the commands that decode: --device checked, --threads applied first."""
    check_choice("--device", device, ("auto", "cpu", "cuda"))
    if threads is not None:
        torch.set_num_threads(threads)
    return open_run(run_dir, device)


def run_decoding(run: Run, opts: DecodeOptions) -> Decoding:
    """The run's recipe `decode` section with the command-line options laid over it; with
    --precision int8 the run decodes with an int8 copy of its model from then on."""
    decoding = resolve_decoding(run.recipe.decode, opts, run.device)
    use_precision(run, decoding.precision)
    return decoding


def use_precision(run: Run, precision: str) -> None:
    """int8: replace run.model by an int8 copy (txcli/quantize.py); other precisions need none."""
    if precision == "int8" and not getattr(run.model, "tx_int8", False):
        from ..quantize import int8_copy

        run.model = int8_copy(run.model)
        run.model.tx_int8 = True
