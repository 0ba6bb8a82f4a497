"""`tx train-tokenizer`: subword tokenizers from the recipe's training data, into the run directory."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import MODEL_FILE, tokenizer_files
from ..data import read_side
from ..errors import TxError, UsageError
from ..recipe import Recipe
from ..tokenizer import SubwordTokenizer, train_tokenizer


def train_tokenizers(recipe: Recipe, force: bool = False) -> list[Path]:
    """Train (joint, or one per side) and save; returns the files written."""
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
