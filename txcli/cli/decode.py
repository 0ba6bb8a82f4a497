"""Commands that decode with a model: `tx translate`, `tx score`, `tx evaluate`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import (BatchTokensOpt, DeviceOpt, EngineOpt, InputErrorsOpt, PrecisionOpt, ThreadsOpt, decode_options,
                     err, out, user_errors, warn)


@user_errors
@decode_options
def translate(
    run_dirs: List[Path] = typer.Argument(..., help="Run directory of a trained model (or a checkpoint directory in one; with --engine ctranslate2 also a `tx export ctranslate2` directory); several: decode with their ensemble, settings from the first."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Source sentences, one a line (default: stdin)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here, whole or not at all (default: stdout, flushed as it goes)."),
    fmt: str = typer.Option("text", "--format", help="text: one translation a line (n-best: tab-separated); jsonl: source, hypotheses and scores."),
    tokens: bool = typer.Option(False, "--tokens", help="Print subword tokens instead of detokenized text."),
    nbest: int = typer.Option(1, "--nbest", min=1, help="Hypotheses per sentence (at most the beam size; with --sample: samples)."),
    input_errors: str = InputErrorsOpt,
    engine: str = EngineOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
    target_lang: Optional[str] = typer.Option(None, "--target-lang", help="Multilingual models (e.g. OPUS-MT): the output language, as the vocabulary's >>xxx<< token names it (deu for >>deu<<)."),
    decode=None,
):
    """Translate sentences, one a line: N lines in give N lines out, in order. Empty lines stay
    empty; lines longer than the model's maximum length are truncated (one warning)."""
    from ..commands.translate import Formatter, translate_files
    from ..engines import open_engine
    from ..views import truncation_warning

    decode.nbest = nbest
    translator = open_engine(engine, run_dirs, decode, device, threads)
    if target_lang is not None:
        from ..commands.target_language import set_target_language

        set_target_language(translator, target_lang)
    warn(translator.warning)
    formatter = Formatter(translator, fmt, tokens)
    summary = translate_files(translator, input, output, sys.stdin.buffer, sys.stdout.buffer, formatter,
                              input_errors)
    truncation_warning(err, summary.truncated, summary.max_len)
    warn(summary.warning)


@user_errors
def score(
    run_dirs: List[Path] = typer.Argument(..., help="Run directory of a trained model (or a checkpoint directory in one); several: their ensemble's mean log-probability."),
    src: Path = typer.Option(..., "--src", help="Source sentences, one a line."),
    tgt: Path = typer.Option(..., "--tgt", help="Their translations, one a line."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    fmt: str = typer.Option("text", "--format", help="text: 'logprob<TAB>mean per token' a line; jsonl: one object a line."),
    tokens: bool = typer.Option(False, "--tokens", help="Also give every target token's log-probability."),
    batch_tokens: Optional[int] = BatchTokensOpt, precision: str = PrecisionOpt,
    input_errors: str = InputErrorsOpt, device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
):
    """The model's log-probability of given translations (every target token and the end of sentence), one line
    per sentence pair: for filtering corpora and comparing models."""
    from ..commands.run import open_for_decoding
    from ..commands.score import check_request, score_to
    from ..views import truncation_warning

    check_request(src, tgt, fmt, batch_tokens)
    run = open_for_decoding(run_dirs, device, threads)
    summary = score_to(run, src, tgt, output, sys.stdout.buffer, batch_tokens=batch_tokens, jsonl=fmt == "jsonl",
                       show_tokens=tokens, precision=precision, errors=input_errors)
    warn(summary.warning)
    truncation_warning(err, summary.truncated, summary.max_len, "sentence pairs")
    warn(summary.input_warning)


@user_errors
@decode_options
def evaluate(
    run_dirs: Optional[List[Path]] = typer.Argument(None, help="Run directory to translate --src with (not needed with --hyp); several: their ensemble."),
    src: Optional[Path] = typer.Option(None, "--src", help="Source sentences to translate (default, with no files given: the recipe's test split)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference translations, one a line."),
    hyp: Optional[Path] = typer.Option(None, "--hyp", help="Score this hypothesis file instead of translating."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also save the translations of --src here."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    input_errors: str = InputErrorsOpt,
    engine: str = EngineOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
    decode=None,
):
    """Corpus BLEU and chrF (sacrebleu) of a run's translations of --src, or of a --hyp file,
    against --ref."""
    import json

    from ..commands.evaluate import EvalRequest, evaluate as run_evaluate, prepare
    from ..engines import open_engine
    from ..views import evaluation_table

    req = EvalRequest(ref=ref, src=src, hyp=hyp, output=output, input_errors=input_errors)
    translator, req = prepare(list(run_dirs or []), req,
                              lambda dirs: open_engine(engine, dirs, decode, device, threads))
    warn(translator and translator.warning)
    with err.status("evaluate: translating" if hyp is None else "evaluate: scoring") as status:
        result = run_evaluate(translator, req, lambda n: status.update(f"evaluate: translated {n} sentences"))
    warn(result.get("input_warning"))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    evaluation_table(out, result)
