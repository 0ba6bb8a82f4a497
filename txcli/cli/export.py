"""`tx export`: a run's model written for another inference engine (CTranslate2) or library
(Hugging Face transformers)."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import err, escape, user_errors


@user_errors
def export_ctranslate2(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained model."),
    out_dir: Path = typer.Argument(..., help="Directory to write (replaced whole if it is an earlier export)."),
    quantization: str = typer.Option("none", "--quantization", help="Weights as stored: none (float32), int8, int8_float32, int8_float16, int8_bfloat16, float16 or bfloat16."),
):
    """A CTranslate2 model directory from a run: model.bin, vocabularies, the tokenizer files and
    tx_export.json (decode defaults, maximum length). `tx translate OUT_DIR --engine ctranslate2`
    runs it; so does ctranslate2.Translator(OUT_DIR)."""
    from ..engines.ct2_export import export_run

    with err.status("export: converting the weights"):
        info = export_run(run_dir, out_dir, quantization)
    arch = info["architecture"]
    err.print(f"wrote {escape(str(out_dir))}: {arch['encoder_layers']}+{arch['decoder_layers']} layers, "
              f"{'pre' if arch['pre_norm'] else 'post'}-norm, weights {quantization}")


@user_errors
def export_huggingface(
    run_dir: Path = typer.Argument(..., help="Run directory of a post-norm model with a sentencepiece tokenizer."),
    out_dir: Path = typer.Argument(..., help="Directory to write (must not exist, or be empty, or an earlier export)."),
):
    """A transformers Marian directory from a run: config.json, generation_config.json,
    model.safetensors, source.spm, target.spm, vocab.json, tokenizer_config.json.
    MarianMTModel.from_pretrained(OUT_DIR) and AutoTokenizer.from_pretrained(OUT_DIR) load it."""
    from ..commands.export_hf import export_huggingface as run_export

    with err.status("export: converting the weights"):
        written = run_export(run_dir, out_dir)
    err.print(f"wrote {escape(str(out_dir))}: {', '.join(written)}")
