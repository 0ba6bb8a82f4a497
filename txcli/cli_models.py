"""The commands that bring models in from and out to Hugging Face's Marian layout: `tx import
marian` and `tx export huggingface`. Parsing and printing only, as in cli.py (which registers
this module); the work is in txcli.commands.import_marian and txcli.commands.export_hf."""

from __future__ import annotations

from pathlib import Path

import typer

from .cli import _escape, app, err, export_app, user_errors

import_app = typer.Typer(help="Bring a pretrained model in as a tx run directory.", no_args_is_help=True)
app.add_typer(import_app, name="import")


@import_app.command("marian")
@user_errors
def import_marian(
    hf_dir: Path = typer.Argument(..., help="A local Marian model directory (e.g. from `huggingface-cli download Helsinki-NLP/opus-mt-en-de --local-dir DIR`)."),
    run_dir: Path = typer.Argument(..., help="The run directory to create (must not exist, or be empty)."),
):
    """A tx run directory from an OPUS-MT (Marian) model: weights, sentencepiece tokenizers,
    recipe.yaml with the model section and decode defaults, import.json. Every tx command then
    works on it; `train.init_from: RUN_DIR` fine-tunes it. Nothing is downloaded."""
    from .commands.import_marian import import_marian as run_import

    with err.status("import: converting the weights"):
        s = run_import(hf_dir, run_dir)
    langs = f"; target languages: {' '.join(s.languages)}" if s.languages else ""
    err.print(f"imported {_escape(str(s.weights))} into {_escape(str(s.run_dir))}: "
              f"{s.layers[0]}+{s.layers[1]} layers, {s.parameters:,} parameters, vocabularies "
              f"{s.vocab_sizes[0]:,}/{s.vocab_sizes[1]:,}{_escape(langs)}")


@export_app.command("huggingface")
@user_errors
def export_huggingface(
    run_dir: Path = typer.Argument(..., help="Run directory of a post-norm model with a sentencepiece tokenizer."),
    out_dir: Path = typer.Argument(..., help="Directory to write (must not exist, or be empty, or an earlier export)."),
):
    """A transformers Marian directory from a run: config.json, generation_config.json,
    model.safetensors, source.spm, target.spm, vocab.json, tokenizer_config.json.
    MarianMTModel.from_pretrained(OUT_DIR) and AutoTokenizer.from_pretrained(OUT_DIR) load it."""
    from .commands.export_hf import export_huggingface as run_export

    with err.status("export: converting the weights"):
        written = run_export(run_dir, out_dir)
    err.print(f"wrote {_escape(str(out_dir))}: {', '.join(written)}")
