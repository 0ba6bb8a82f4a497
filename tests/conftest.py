"""Shared fixtures: a tiny parallel corpus and recipe, made fresh per test in a temp folder."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WORDS_SRC = "the a dog cat house tree sees likes big small red green runs sleeps in on with".split()


def make_corpus(folder: Path, n: int = 200, seed: int = 0) -> tuple[Path, Path]:
    """A toy pair: the target is the source reversed and upper-cased, so it has real structure."""
    rng = random.Random(seed)
    src_lines, tgt_lines = [], []
    for _ in range(n):
        words = [rng.choice(WORDS_SRC) for _ in range(rng.randint(3, 9))]
        src_lines.append(" ".join(words))
        tgt_lines.append(" ".join(w.upper() for w in reversed(words)))
    src, tgt = folder / "train.src", folder / "train.tgt"
    src.write_text("\n".join(src_lines) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(tgt_lines) + "\n", encoding="utf-8")
    return src, tgt


TINY_RECIPE = """\
name: tiny
run_dir: run
seed: 1
data:
  train: {{src: train.src, tgt: train.tgt}}
  valid: {{src: train.src, tgt: train.tgt}}
  max_len: 32
tokenizer: {{kind: {kind}, vocab_size: 64, joint: {joint}, min_frequency: 1}}
model: {{d_model: 32, heads: 4, ff: 64, encoder_layers: 2, decoder_layers: 2, dropout: 0.0}}
train: {{batch_tokens: 256, lr: 3.0e-3, warmup: 10, max_steps: 20, eval_every: 10, log_every: 5, compile: false}}
decode: {{beam: 2, max_len_b: 5}}
"""


@pytest.fixture
def tiny_recipe(tmp_path: Path) -> Path:
    make_corpus(tmp_path)
    path = tmp_path / "recipe.yaml"
    path.write_text(TINY_RECIPE.format(kind="bpe", joint="true"), encoding="utf-8")
    return path


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models gain nothing from more, and on a busy
    machine the hand-offs between threads can make a test ten times slower."""
    from txcli.process import set_threads

    undo = set_threads(1)
    yield
    undo()


def run_tx(*args: str, cwd: Path | None = None, input: str | bytes | None = None, timeout: float = 300):
    """Run the real CLI in a subprocess, as a user would."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "txcli", *args], cwd=cwd, input=input,
                          capture_output=True, text=not isinstance(input, bytes), timeout=timeout)


@pytest.fixture
def tiny_run(tiny_recipe: Path) -> Path:
    """A complete run directory holding an untrained tiny model: recipe.yaml, tokenizer, weights.
    Enough for commands that load a run (translate, score, attention-dump, inspect)."""
    return make_tiny_run(tiny_recipe)


def make_tiny_run(tiny_recipe: Path) -> Path:
    """The tiny_run fixture's work, for fixtures of a wider scope (one run for a whole module)."""
    import torch

    from txcli.checkpoint import MODEL_FILE, RECIPE_FILE, save_model, write_text_atomic
    from txcli.commands.run import model_config
    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.model import Seq2SeqTransformer
    from txcli.schema import dump_yaml, load_recipe

    recipe = load_recipe(tiny_recipe)
    train_tokenizers(recipe)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    torch.manual_seed(0)
    cfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    model = Seq2SeqTransformer(cfg)
    save_model(recipe.run_dir / MODEL_FILE, model, cfg.to_dict())
    write_text_atomic(recipe.run_dir / RECIPE_FILE, dump_yaml(recipe.to_plain()))
    return recipe.run_dir


def tiny(path: Path, *overrides: str):
    """The recipe at `path` for a one-thread training run (tiny models; and no spinning against
    other processes on a busy machine; train() puts the threads back after), with overrides."""
    from txcli.schema import load_recipe

    return load_recipe(path, ["train.threads=1", *overrides])


def metrics(run_dir: Path) -> list[dict]:
    """A run's metrics.jsonl records."""
    import json

    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
