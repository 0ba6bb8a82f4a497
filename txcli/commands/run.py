"""The run directory as every command sees it: the resolved recipe, the tokenizers (trained into
it or loaded from it) and the model. Not a user action itself: the one module the action modules
share, so that none of them imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import Optional

import torch

from ..checkpoint import (CHECKPOINT_MODEL, CHECKPOINTS, MODEL_FILE, RECIPE_FILE, load_model_state,
                          resolve_checkpoint_dir, tokenizer_files)
from ..data import read_side
from ..decoding import Decoding, resolve_decoding
from ..options import DecodeOptions, check_choice
from ..errors import TxError, UsageError
from ..model import ModelConfig, Seq2SeqTransformer
from ..model_schema import max_positions, shares_embeddings
from ..heap import keep_freed_memory
from ..onednn import small_primitive_caches
from ..process import set_threads
from ..schema import Recipe, read_saved_recipe
from ..search import Ensemble
from ..tokenizer import PAD_ID, SubwordTokenizer, load_tokenizer, train_tokenizer


@dataclass
class Run:
    run_dir: Path
    recipe: Recipe
    src_tok: SubwordTokenizer
    tgt_tok: SubwordTokenizer
    model: Seq2SeqTransformer  # or a search.Ensemble (open_runs with several runs)
    device: torch.device
    int8: bool = False  # model is an int8 copy of the loaded one (use_precision)


def model_config(recipe: Recipe, src_vocab: int, tgt_vocab: int) -> ModelConfig:
    """The recipe's model section (same names) plus what the tokenizers and data decide."""
    m = recipe.model
    return ModelConfig(**m.model_dump(), src_vocab_size=src_vocab, tgt_vocab_size=tgt_vocab,
                       share_embeddings=shares_embeddings(m.tie_embeddings, recipe.tokenizer.joint),
                       max_positions=max_positions(recipe.data.max_len), pad_id=PAD_ID)


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
    all_tags = corpus_tags(recipe)

    def train(side):
        tags = all_tags if side in (None, "src") else []  # tags go before source lines only
        if cfg.model is not None:  # an existing sentencepiece model: loaded, not trained
            from ..sentencepiece_tokenizer import load_model_file

            try:
                return load_model_file(cfg.model, tags)
            except (ValueError, OSError) as err:
                raise UsageError(f"tokenizer.model: {err}") from None
        return train_tokenizer(read_side(recipe.data.corpora(), side), cfg.kind, cfg.vocab_size,
                               cfg.min_frequency, cfg.lowercase, tags)

    if cfg.joint:
        train(None).save(src_path)
        return [src_path]
    train("src").save(src_path)
    train("tgt").save(tgt_path)
    return [src_path, tgt_path]


def corpus_tags(recipe: Recipe) -> list[str]:
    """The training corpora's tags, each once, in recipe order: the tokens a trained tokenizer adds."""
    return list(dict.fromkeys(c.tag for c in recipe.data.corpora() if c.tag))


def load_tokenizers(run_dir: Path, joint: bool) -> tuple[SubwordTokenizer, SubwordTokenizer]:
    src_path, tgt_path = tokenizer_files(run_dir, joint)
    loaded = []
    for path, side in ((src_path, "src"), (tgt_path, "tgt")):
        if not path.is_file():
            raise TxError(f"{path}: missing (run `tx train-tokenizer` or `tx train` first)")
        try:
            loaded.append(load_tokenizer(path, side))  # a sentencepiece file may segment each side its own way
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


def locate_weights(path: Path) -> tuple[Path, Optional[Path]]:
    """(run directory, weights file) for a run directory (weights None: its model.safetensors)
    or a checkpoint directory inside one (RUN/checkpoints/step-000500, RUN/checkpoints/last)."""
    path = Path(path)
    if (path / RECIPE_FILE).is_file() or not path.parent.name == CHECKPOINTS:
        return path, None
    found = resolve_checkpoint_dir(path)
    if not found.is_dir():
        raise TxError(f"{path}: no such checkpoint directory")
    return path.parent.parent, found / CHECKPOINT_MODEL


def open_for_decoding(run_dir: Path | list[Path], device: str = "auto", threads: Optional[int] = None) -> Run:
    """open_run for the commands that decode: --device checked, --threads applied first, oneDNN's
    caches kept small (bf16 decoding meets a new shape at nearly every step: onednn.py), glibc
    keeping freed memory (heap.py). Several run (or checkpoint) directories make one Run whose
    model is their Ensemble."""
    check_choice("--device", device, ("auto", "cpu", "cuda"))
    set_threads(threads)  # for the rest of the process: decoding commands end with it
    small_primitive_caches()
    keep_freed_memory()  # the same: a batch's cache and a step's logits reuse the pages of the last
    paths = list(run_dir) if isinstance(run_dir, (list, tuple)) else [run_dir]
    if not paths:
        raise UsageError("give at least one RUN_DIR")
    return open_runs(paths, device)


def open_runs(paths: list[Path], device: str = "auto") -> Run:
    """Each path's model; the first run's recipe and tokenizers. Every run must use the same
    tokenizers (same vocabularies on both sides), or the models' log-probabilities would not
    line up."""
    runs = []
    for p in paths:
        run_dir, weights = locate_weights(p)
        runs.append(open_run(run_dir, device, weights))
    first = runs[0]
    if len(runs) == 1:
        return first
    for path, other in zip(paths[1:], runs[1:]):
        for side, a, b in (("source", first.src_tok, other.src_tok), ("target", first.tgt_tok, other.tgt_tok)):
            if a.get_vocab() != b.get_vocab():
                raise UsageError(f"{path}: its {side} vocabulary differs from {paths[0]}'s; "
                                 "an ensemble needs runs that share one tokenizer")
    ensemble = Ensemble([r.model for r in runs])
    return Run(first.run_dir, first.recipe, first.src_tok, first.tgt_tok, ensemble, first.device)


def run_decoding(run: Run, opts: DecodeOptions) -> Decoding:
    """The run's recipe `decode` section with the command-line options laid over it; with
    --precision int8 the run decodes with an int8 copy of its model from then on."""
    decoding = resolve_decoding(run.recipe.decode, opts, run.device)
    use_precision(run, decoding.precision)
    return decoding


def use_precision(run: Run, precision: str) -> None:
    """int8: replace run.model by an int8 copy (txcli/quantize.py); other precisions need none."""
    if precision == "int8" and not run.int8:
        from ..quantize import int8_copy

        run.model = int8_copy(run.model)
        run.int8 = True
