"""The `tx` command line: parsing and printing only.

Heavy modules (torch, tokenizers) are imported inside command bodies, so `tx --help` answers at
once. Errors a user can cause become one line on stderr and a non-zero exit: 2 for a usage or
recipe mistake, 1 for a failure at run time.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from .errors import TxError

app = typer.Typer(
    name="tx",
    help="Train, run and look inside Transformer encoder-decoder translation models.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    add_completion=False,
)
recipe_app = typer.Typer(help="Validate and show recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOption = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set model.d_model=512 (repeatable; the value is parsed as YAML).",
)


def fail(message: str, code: int) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, emoji=False, highlight=False)
    raise typer.Exit(code)


def user_errors(fn):
    """Turn our own errors into one line and an exit code; Ctrl-C into exit 130 without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except TxError as e:
            fail(_escape(str(e)), e.exit_code)
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(130)
        except BrokenPipeError:
            # the reader of a pipe went away (`tx translate ... | head`): not an error of ours
            sys.stderr.close()
            raise typer.Exit(0)

    return wrapper


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _load(recipe: Path, overrides: Optional[List[str]], check_files: bool = True):
    from .recipe import load_recipe

    return load_recipe(recipe, overrides or [], check_files=check_files)


# ---------------------------------------------------------------------------------------------


@recipe_app.command("check")
@user_errors
def recipe_check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
):
    """Validate a recipe (types, values, data files) and print it resolved, defaults filled in."""
    from .recipe import dump_yaml

    r = _load(recipe, set_)
    out.print(dump_yaml(r.to_plain()), markup=False, highlight=False, end="")
    err.print(f"[green]ok[/]: {recipe} is valid; run directory {r.run_dir}")


@app.command("train-tokenizer")
@user_errors
def train_tokenizer(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    force: bool = typer.Option(False, "--force", help="Replace the tokenizer even if a model was trained with it."),
):
    """Train the recipe's subword tokenizer(s) on its training data and save them in the run directory."""
    from .commands.tokenize import train_tokenizers

    r = _load(recipe, set_)
    with err.status(f"training {r.tokenizer.kind} tokenizer ({r.tokenizer.vocab_size} subwords)"):
        written = train_tokenizers(r, force=force)
    from .commands.tokenize import load_tokenizers

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    for path in written:
        err.print(f"wrote {path}")
    err.print(f"vocabulary: source {src_tok.vocab_size}, target {tgt_tok.vocab_size}")


@app.command("train")
@user_errors
def train(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    resume: bool = typer.Option(False, "--resume", help="Continue from the run directory's last checkpoint."),
):
    """Train a model (and its tokenizer, if the run directory has none) into the recipe's run directory.

    Runs on one process, or on several with DistributedDataParallel under
    `torchrun --nproc_per_node=N $(which tx) train RECIPE`. Ctrl-C saves a checkpoint first.
    """
    from .commands.train import describe, train as run_training
    from .progress import train_progress

    r = _load(recipe, set_)
    with train_progress(err, describe) as progress:
        result = run_training(r, resume=resume, progress=progress.event)
    if result.rank != 0:
        return
    if result.best_score is not None:
        err.print(f"best {result.metric} {result.best_score:.2f} at step {result.best_step}: "
                  f"{_escape(str(result.run_dir / 'model.safetensors'))}")
    if result.reason == "interrupted":
        again = " ".join(["tx train", str(recipe), *(f"--set {s}" for s in set_ or []), "--resume"])
        err.print(f"stopped by {result.signal} at step {result.step}; checkpoint saved. "
                  f"Resume with: {_escape(again)}")
        raise typer.Exit(130 if result.signal == "SIGINT" else 143)


@app.command("average")
@user_errors
def average(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    best: Optional[int] = typer.Option(None, "--best", help="Average the N best step checkpoints."),
    last: Optional[int] = typer.Option(None, "--last", help="Average the N latest step checkpoints."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Where to write (default: RUN_DIR/model.safetensors)."),
):
    """Average the weights of several checkpoints into one model file."""
    from .commands.average import average as run_average

    result = run_average(run_dir, best=best, last=last, output=output)
    steps = ", ".join(str(s) for s in result.steps)
    err.print(f"averaged the {len(result.steps)} {result.how} checkpoints (steps {steps}) into "
              f"{_escape(str(result.output))}")


# --------------------------------------------------------------------------------------------- decoding
# translate and evaluate share these options; None means "the recipe's decode section".

BeamOpt = typer.Option(None, "--beam", help="Beam size; 1 is greedy search (default: the recipe's decode.beam).")
AlphaOpt = typer.Option(None, "--alpha", help="GNMT length penalty ((5+len)/6)^alpha; 0 turns it off (default: decode.alpha).")
MaxLenAOpt = typer.Option(None, "--max-len-a", help="Longest output: a * source length + b tokens (default: decode.max_len_a).")
MaxLenBOpt = typer.Option(None, "--max-len-b", help="See --max-len-a (default: decode.max_len_b).")
MinLenOpt = typer.Option(None, "--min-len", help="No </s> before this many tokens (default: decode.min_len).")
NoRepeatOpt = typer.Option(None, "--no-repeat-ngram", help="Never repeat an n-gram of this size; 0 allows it (default: decode.no_repeat_ngram).")
BatchTokensOpt = typer.Option(None, "--batch-tokens", help="Source tokens (with padding) per batch (default: decode.batch_tokens).")
SampleOpt = typer.Option(False, "--sample", help="Sample tokens at random instead of beam search.")
TemperatureOpt = typer.Option(1.0, "--temperature", help="With --sample: flatten (>1) or sharpen (<1) the distribution.")
TopKOpt = typer.Option(0, "--top-k", help="With --sample: draw from the k likeliest tokens only (0: all).")
TopPOpt = typer.Option(1.0, "--top-p", help="With --sample: draw from the smallest set of tokens holding this probability.")
SeedOpt = typer.Option(1, "--seed", help="With --sample: random seed.")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32, or bf16 (autocast; about 2x faster on CPUs with bf16 support).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads for the model (default: torch's choice).")


def _decoding(run, beam, alpha, max_len_a, max_len_b, min_len, no_repeat_ngram, batch_tokens, nbest,
              sample, temperature, top_k, top_p, seed, precision):
    from .commands.translate import DecodeOptions, resolve_decoding

    return resolve_decoding(run, DecodeOptions(
        beam=beam, alpha=alpha, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        no_repeat_ngram=no_repeat_ngram, batch_tokens=batch_tokens, nbest=nbest, sample=sample,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, precision=precision))


def _open_for_decoding(run_dir: Path, device: str, threads: Optional[int]):
    from .commands.translate import open_for_decoding

    return open_for_decoding(run_dir, device, threads)


def _truncation_warning(count: int, max_len: int, what: str = "lines") -> None:
    if count:
        err.print(f"[yellow]warning:[/] {count} {what} longer than the model's maximum of {max_len} "
                  "subword tokens were truncated")


@app.command("translate")
@user_errors
def translate(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained model."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Source sentences, one a line (default: stdin)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here, whole or not at all (default: stdout, flushed as it goes)."),
    fmt: str = typer.Option("text", "--format", help="text: one translation a line (n-best: tab-separated); jsonl: source, hypotheses and scores."),
    tokens: bool = typer.Option(False, "--tokens", help="Print subword tokens instead of detokenized text."),
    nbest: int = typer.Option(1, "--nbest", min=1, help="Hypotheses per sentence (at most the beam size; with --sample: samples)."),
    beam: Optional[int] = BeamOpt, alpha: Optional[float] = AlphaOpt, max_len_a: Optional[float] = MaxLenAOpt,
    max_len_b: Optional[int] = MaxLenBOpt, min_len: Optional[int] = MinLenOpt,
    no_repeat_ngram: Optional[int] = NoRepeatOpt, batch_tokens: Optional[int] = BatchTokensOpt,
    sample: bool = SampleOpt, temperature: float = TemperatureOpt, top_k: int = TopKOpt,
    top_p: float = TopPOpt, seed: int = SeedOpt, precision: str = PrecisionOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
):
    """Translate sentences, one a line: N lines in give N lines out, in order. Empty lines stay
    empty; lines longer than the model's maximum length are truncated (one warning)."""
    from .commands.translate import Formatter, open_input, open_output, translate_stream

    run = _open_for_decoding(run_dir, device, threads)
    decoding = _decoding(run, beam, alpha, max_len_a, max_len_b, min_len, no_repeat_ngram, batch_tokens,
                         nbest, sample, temperature, top_k, top_p, seed, precision)
    formatter = Formatter(run, fmt, tokens)
    with open_input(input, sys.stdin.buffer) as (source, name), open_output(output, sys.stdout.buffer) as sink:
        summary = translate_stream(run, source, sink, decoding, formatter, name)
    _truncation_warning(summary.truncated, summary.max_len)


@app.command("score")
@user_errors
def score(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained model."),
    src: Path = typer.Option(..., "--src", help="Source sentences, one a line."),
    tgt: Path = typer.Option(..., "--tgt", help="Their translations, one a line."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write here instead of stdout."),
    fmt: str = typer.Option("text", "--format", help="text: 'logprob<TAB>mean per token' a line; jsonl: one object a line."),
    tokens: bool = typer.Option(False, "--tokens", help="Also give every target token's log-probability."),
    batch_tokens: Optional[int] = BatchTokensOpt, precision: str = PrecisionOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
):
    """The model's log-probability of given translations (every target token and </s>), one line
    per sentence pair: for filtering corpora and comparing models."""
    from .commands.score import score_files
    from .commands.translate import check_choice, open_output

    check_choice("--format", fmt, ("text", "jsonl"))
    for flag, path in (("--src", src), ("--tgt", tgt)):
        if not path.is_file():
            fail(f"{flag} {_escape(str(path))}: file not found", 2)
    if batch_tokens is not None and batch_tokens < 1:
        fail(f"--batch-tokens {batch_tokens}: must be at least 1", 2)
    run = _open_for_decoding(run_dir, device, threads)
    with open_output(output, sys.stdout.buffer) as sink:
        summary = score_files(run, src, tgt, sink, batch_tokens or run.recipe.decode.batch_tokens,
                              jsonl=fmt == "jsonl", show_tokens=tokens, precision=precision)
    _truncation_warning(summary.truncated, summary.max_len, "sentence pairs")


@app.command("evaluate")
@user_errors
def evaluate(
    run_dir: Optional[Path] = typer.Argument(None, help="Run directory to translate --src with (not needed with --hyp)."),
    src: Optional[Path] = typer.Option(None, "--src", help="Source sentences to translate (default, with no files given: the recipe's test split)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Reference translations, one a line."),
    hyp: Optional[Path] = typer.Option(None, "--hyp", help="Score this hypothesis file instead of translating."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also save the translations of --src here."),
    as_json: bool = typer.Option(False, "--json", help="Print the scores as JSON."),
    beam: Optional[int] = BeamOpt, alpha: Optional[float] = AlphaOpt, max_len_a: Optional[float] = MaxLenAOpt,
    max_len_b: Optional[int] = MaxLenBOpt, min_len: Optional[int] = MinLenOpt,
    no_repeat_ngram: Optional[int] = NoRepeatOpt, batch_tokens: Optional[int] = BatchTokensOpt,
    sample: bool = SampleOpt, temperature: float = TemperatureOpt, top_k: int = TopKOpt,
    top_p: float = TopPOpt, seed: int = SeedOpt, precision: str = PrecisionOpt,
    device: str = DeviceOpt, threads: Optional[int] = ThreadsOpt,
):
    """Corpus BLEU and chrF (sacrebleu) of a run's translations of --src, or of a --hyp file,
    against --ref."""
    import json

    from .commands.evaluate import EvalRequest, default_test_files, evaluate as run_evaluate

    req = EvalRequest(ref=ref, src=src, hyp=hyp, output=output)
    run = decoding = None
    if hyp is None:
        if run_dir is None:
            fail("give a RUN_DIR to translate with, or --hyp FILE --ref FILE", 2)
        run = _open_for_decoding(run_dir, device, threads)
        decoding = _decoding(run, beam, alpha, max_len_a, max_len_b, min_len, no_repeat_ngram, batch_tokens,
                             1, sample, temperature, top_k, top_p, seed, precision)
        req = default_test_files(run, req)
    with err.status("evaluate: translating") as status:
        result = run_evaluate(run, req, decoding, lambda n: status.update(f"evaluate: translated {n} sentences"))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _evaluation_table(result)


def _evaluation_table(result: dict) -> None:
    from rich.table import Table

    table = Table(title="tx evaluate", show_header=True)
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("signature", style="dim")
    table.add_row("BLEU", f"{result['bleu']:.2f}", _escape(result["bleu_signature"]))
    table.add_row("chrF", f"{result['chrf']:.2f}", _escape(result["chrf_signature"]))
    out.print(table)
    out.print(f"{result['sentences']} sentences; {_escape(result['bleu_detail'])}", highlight=False)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
