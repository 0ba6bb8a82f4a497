"""`tx import marian`: a pretrained OPUS-MT (Marian) model from a local directory, as a tx run.
(The way back, `tx export huggingface`, is in export.py.)"""

from __future__ import annotations

from pathlib import Path

import typer

from .common import err, escape, user_errors


@user_errors
def import_marian(
    hf_dir: Path = typer.Argument(..., help="A local Marian model directory (e.g. from `huggingface-cli download Helsinki-NLP/opus-mt-en-de --local-dir DIR`)."),
    run_dir: Path = typer.Argument(..., help="The run directory to create (must not exist, or be empty)."),
):
    """A tx run directory from an OPUS-MT (Marian) model: weights, sentencepiece tokenizers,
    recipe.yaml with the model section and decode defaults, import.json. Every tx command then
    works on it; `train.init_from: RUN_DIR` fine-tunes it. Nothing is downloaded."""
    from ..commands.import_marian import import_marian as run_import

    with err.status("import: converting the weights"):
        s = run_import(hf_dir, run_dir)
    langs = f"; target languages: {' '.join(s.languages)}" if s.languages else ""
    err.print(f"imported {escape(str(s.weights))} into {escape(str(s.run_dir))}: "
              f"{s.layers[0]}+{s.layers[1]} layers, {s.parameters:,} parameters, vocabularies "
              f"{s.vocab_sizes[0]:,}/{s.vocab_sizes[1]:,}{escape(langs)}")
