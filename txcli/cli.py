"""The `tx` command line: parsing and printing only.

Each command turns its options into a request, hands it to `txcli.commands`, and prints what comes
back (through `views` and `progress`). Heavy modules (torch, tokenizers) are imported inside
command bodies, so `tx --help` answers at once. Errors a user can cause become one line on stderr
and a non-zero exit: 2 for a usage or recipe mistake, 1 for a failure at run time.
`tx --help` lists the commands in the order of the work (WORK_ORDER).
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from .errors import TxError

WORK_ORDER = ("recipe", "train-tokenizer", "train", "import", "average", "export", "translate", "score", "evaluate",
              "attention-dump", "inspect")


class InWorkOrder(TyperGroup):
    """`tx --help` lists the commands in the order of the work, not the order typer adds them."""

    def list_commands(self, ctx) -> list[str]:
        names = list(self.commands)
        return sorted(names, key=lambda n: WORK_ORDER.index(n) if n in WORK_ORDER else len(WORK_ORDER))


app = typer.Typer(
    name="tx",
    cls=InWorkOrder,
    help="Train, run and look inside Transformer encoder-decoder translation models.",
    no_args_is_help=True,
    rich_markup_mode="markdown",  # docstring lines join into paragraphs; a blank line separates them
    pretty_exceptions_enable=False,
)
recipe_app = typer.Typer(help="Validate and show recipes.", no_args_is_help=True)
app.add_typer(recipe_app, name="recipe")
export_app = typer.Typer(help="Write a run's model for another inference engine.", no_args_is_help=True)
app.add_typer(export_app, name="export")

out = Console()
err = Console(stderr=True, highlight=False, soft_wrap=True)

SetOption = typer.Option(
    None, "--set", metavar="KEY=VALUE",
    help="Override a recipe value, e.g. --set model.d_model=512 (repeatable; the value is parsed as YAML).",
)
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads for the model (default: torch's choice).")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast; fast only on GPUs and CPUs with AVX512-BF16 or AMX), auto (bf16 where it is fast), or int8 (int8 linear layers, CPU only; with --engine ctranslate2: its compute type).")
EngineOpt = typer.Option("torch", "--engine", help="torch (tx's own model and search) or ctranslate2 (a CTranslate2 export of the run, made on first use into RUN_DIR/ctranslate2/; pip install -e '.[ct2]')")
BatchTokensOpt = typer.Option(None, "--batch-tokens", help="Source tokens (with padding) per batch (default: decode.batch_tokens).")
InputErrorsOpt = typer.Option("strict", "--input-errors", help="Invalid UTF-8 in the input: strict (stop at that line, naming it) or replace (undecodable bytes become U+FFFD, every line goes on; one warning counts them).")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        out.print(f"tx {version('txcli')}", highlight=False)
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")):
    """Train, run and look inside Transformer encoder-decoder translation models."""


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


def _warn(message: Optional[str]) -> None:
    if message:
        from .views import warn

        warn(err, message)


def _load(recipe: Path, overrides: Optional[List[str]], check_files: bool = True):
    from .recipe import load_recipe

    return load_recipe(recipe, overrides or [], check_files=check_files)


def _memory_warning(r) -> None:
    """load_recipe refuses a model that cannot fit; one that would take most of the machine is a warning."""
    from .recipe import memory_estimate

    _warn(memory_estimate(r).warning)


# --------------------------------------------------------------------------- decoding options
# translate, evaluate and attention-dump share these; None means "the recipe's decode section".

DECODE_OPTIONS = [  # (DecodeOptions field, type, option)
    ("beam", Optional[int], typer.Option(None, "--beam", help="Beam size; 1 is greedy search (default: the recipe's decode.beam).")),
    ("alpha", Optional[float], typer.Option(None, "--alpha", help="GNMT length penalty ((5+len)/6)^alpha; 0 turns it off (default: decode.alpha).")),
    ("max_len_a", Optional[float], typer.Option(None, "--max-len-a", help="Longest output: a x source length + b tokens (default: decode.max_len_a).")),
    ("max_len_b", Optional[int], typer.Option(None, "--max-len-b", help="See --max-len-a (default: decode.max_len_b).")),
    ("min_len", Optional[int], typer.Option(None, "--min-len", help="No end of sentence before this many tokens (default: decode.min_len).")),
    ("no_repeat_ngram", Optional[int], typer.Option(None, "--no-repeat-ngram", help="Never repeat an n-gram of this size; 0 allows it (default: decode.no_repeat_ngram).")),
    ("batch_tokens", Optional[int], BatchTokensOpt),
    ("sample", bool, typer.Option(False, "--sample", help="Sample tokens at random instead of beam search.")),
    ("temperature", float, typer.Option(1.0, "--temperature", help="With --sample: flatten (>1) or sharpen (<1) the distribution.")),
    ("top_k", int, typer.Option(0, "--top-k", help="With --sample: draw from the k likeliest tokens only (0: all).")),
    ("top_p", float, typer.Option(1.0, "--top-p", help="With --sample: draw from the smallest set of tokens holding this probability.")),
    ("seed", int, typer.Option(1, "--seed", help="With --sample: random seed.")),
    ("precision", str, PrecisionOpt),
]


def decode_options(fn):
    """Give a command the shared decoding options: typer sees each as its own parameter, and the
    command receives them as one `decode: DecodeOptions` argument."""
    signature = inspect.signature(fn, eval_str=True)  # real types: typer reads this signature as given
    own = [p for p in signature.parameters.values() if p.name != "decode"]
    shared = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind)
              for name, kind, option in DECODE_OPTIONS]

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .options import DecodeOptions

        decode = DecodeOptions(**{name: kwargs.pop(name) for name, _, _ in DECODE_OPTIONS})
        return fn(*args, decode=decode, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + shared)
    wrapper.__annotations__ = {}  # the signature carries the types
    return wrapper


# --------------------------------------------------------------------------- the commands, in the order of the work


@recipe_app.command("check")
@user_errors
def recipe_check(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
):
    """Validate a recipe (types, values, data files) and print it resolved, defaults filled in."""
    from .recipe import dump_yaml, memory_estimate

    r = _load(recipe, set_)
    out.print(dump_yaml(r.to_plain()), markup=False, highlight=False, end="")
    estimate = memory_estimate(r)
    _warn(estimate.warning)
    if r.train.init_from is not None:  # the source run may be trained after the check: a warning here
        from .commands.train import init_source
        from .errors import UsageError

        try:
            init_source(r)
        except UsageError as e:
            _warn(f"{e}; tx train will refuse this until it is fixed")
    err.print(f"[green]ok[/]: {_escape(str(recipe))} is valid; run directory {_escape(str(r.run_dir))}; "
              f"{estimate.parameters:,} parameters, training needs about {estimate.total_bytes / (1 << 30):.1f} GiB")


@app.command("train-tokenizer")
@user_errors
def train_tokenizer(
    recipe: Path = typer.Argument(..., help="Recipe YAML file."),
    set_: Optional[List[str]] = SetOption,
    force: bool = typer.Option(False, "--force", help="Replace the tokenizer even if a model was trained with it."),
):
    """Train the recipe's subword tokenizer(s) on its training data and save them in the run directory."""
    from .commands.run import load_tokenizers, train_tokenizers

    r = _load(recipe, set_)
    with err.status(f"training {r.tokenizer.kind} tokenizer ({r.tokenizer.vocab_size} subwords)"):
        written = train_tokenizers(r, force=force)
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
    from .heap import keep_freed_memory
    from .openmp import short_spin_waits

    short_spin_waits()  # before torch loads OpenMP
    keep_freed_memory()  # steps reuse their pages instead of faulting in fresh ones
    from .commands.train import train as run_training
    from .progress import train_progress

    r = _load(recipe, set_)
    _memory_warning(r)
    with train_progress(err) as progress:
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


@export_app.command("ctranslate2")
@user_errors
def export_ctranslate2(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained model."),
    out_dir: Path = typer.Argument(..., help="Directory to write (replaced whole if it is an earlier export)."),
    quantization: str = typer.Option("none", "--quantization", help="Weights as stored: none (float32), int8, int8_float32, int8_float16, int8_bfloat16, float16 or bfloat16."),
):
    """A CTranslate2 model directory from a run: model.bin, vocabularies, the tokenizer files and
    tx_export.json (decode defaults, maximum length). `tx translate OUT_DIR --engine ctranslate2`
    runs it; so does ctranslate2.Translator(OUT_DIR)."""
    from .engines.ct2_export import export_run

    with err.status("export: converting the weights"):
        info = export_run(run_dir, out_dir, quantization)
    arch = info["architecture"]
    err.print(f"wrote {_escape(str(out_dir))}: {arch['encoder_layers']}+{arch['decoder_layers']} layers, "
              f"{'pre' if arch['pre_norm'] else 'post'}-norm, weights {quantization}")


@app.command("translate")
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
    from .commands.translate import Formatter, translate_files
    from .engines import open_engine
    from .views import truncation_warning

    decode.nbest = nbest
    translator = open_engine(engine, run_dirs, decode, device, threads)
    if target_lang is not None:
        from .commands.target_language import set_target_language

        set_target_language(translator, target_lang)
    _warn(translator.warning)
    formatter = Formatter(translator, fmt, tokens)
    summary = translate_files(translator, input, output, sys.stdin.buffer, sys.stdout.buffer, formatter,
                              input_errors)
    truncation_warning(err, summary.truncated, summary.max_len)
    _warn(summary.warning)


@app.command("score")
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
    from .commands.run import open_for_decoding
    from .commands.score import check_request, score_to
    from .views import truncation_warning

    check_request(src, tgt, fmt, batch_tokens)
    run = open_for_decoding(run_dirs, device, threads)
    summary = score_to(run, src, tgt, output, sys.stdout.buffer, batch_tokens=batch_tokens, jsonl=fmt == "jsonl",
                       show_tokens=tokens, precision=precision, errors=input_errors)
    _warn(summary.warning)
    truncation_warning(err, summary.truncated, summary.max_len, "sentence pairs")
    _warn(summary.input_warning)


@app.command("evaluate")
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

    from .commands.evaluate import EvalRequest, evaluate as run_evaluate, prepare
    from .views import evaluation_table

    req = EvalRequest(ref=ref, src=src, hyp=hyp, output=output, input_errors=input_errors)
    translator, req = prepare(list(run_dirs or []), req, decode, device, threads, engine)
    _warn(translator and translator.warning)
    with err.status("evaluate: translating" if hyp is None else "evaluate: scoring") as status:
        result = run_evaluate(translator, req, lambda n: status.update(f"evaluate: translated {n} sentences"))
    _warn(result.get("input_warning"))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    evaluation_table(out, result)


@app.command("attention-dump")
@user_errors
def attention_dump(
    run_dir: Path = typer.Argument(..., help="Run directory of a trained model."),
    src: Optional[List[str]] = typer.Option(None, "--src", help="A source sentence (repeatable)."),
    tgt: Optional[List[str]] = typer.Option(None, "--tgt", help="Its target: forced decoding instead of translating (repeatable, one per --src)."),
    input: Optional[Path] = typer.Option(None, "--input", "-i", help="Source sentences, one a line ('-' = stdin)."),
    ref: Optional[Path] = typer.Option(None, "--ref", help="Targets for --input, one a line: forced decoding."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Dump file ('-' = stdout). Default: stdout, or no dump with --plot/--show."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one record a sentence) or npz (one array per kind and layer: heads x queries x keys)."),
    digits: int = typer.Option(4, "--digits", help="Digits kept in jsonl weights."),
    kind: Optional[List[str]] = typer.Option(None, "--kind", help="Keep only enc, dec or cross (repeatable)."),
    layer: Optional[List[int]] = typer.Option(None, "--layer", help="Keep only this layer, 0-based, -1 = last (repeatable)."),
    head: Optional[List[int]] = typer.Option(None, "--head", help="Keep only this head, 0-based (repeatable)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG heatmaps here: one per sentence, kind and layer, every head in a grid."),
    show: bool = typer.Option(False, "--show", help="Draw one kind, layer and head per sentence in the terminal (default: cross, last layer, head 0)."),
    align: bool = typer.Option(False, "--align", help="Write word alignments (Pharaoh i-j) from cross-attention instead of weights."),
    align_row: str = typer.Option("output", "--align-row", help="Which decoder step speaks for a target word: output (the step that predicts it) or input (the step that reads it, predicting the next; the same as --align-method shift)."),
    align_method: str = typer.Option("predict", "--align-method", help="How --align links words: predict (heads of one layer averaged, the row that predicts the word), shift (the row that reads it; = --align-row input), layers (every layer and head averaged), bidir (layers, sharpened by each source word's share). See txcli/alignment.py."),
    align_select: bool = typer.Option(False, "--align-select", help="Choose the heads, layers and link rule on --gold: tuned on the first half of the sentences, AER reported on the rest."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Gold alignments (Pharaoh): print the AER of every method and decoder layer."),
    html: Optional[Path] = typer.Option(None, "--html", help="Write one self-contained HTML page to explore the attention (offline; sentence picker, heatmaps, lines, alignments)."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1, help="Beam size when translating (default: the recipe's decode.beam)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, help="Length penalty when translating (default: decode.alpha)."),
    precision: str = typer.Option("fp32", "--precision", help="Compute precision: fp32, bf16 or auto (as for translate). The digits kept in jsonl are --digits."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sentences per forward pass."),
    input_errors: str = InputErrorsOpt,
    device: str = DeviceOpt,
):
    """Every attention weight of a model for some sentences: encoder self-attention, decoder
    self-attention and cross-attention, every layer and head, as data (jsonl/npz), pictures
    (--plot, --show) or word alignments (--align)."""
    from .commands.attention import DumpRequest, dump_attention, selection_from_options, with_default_output
    from .options import DecodeOptions
    from .views import attention_heatmap, attention_summary

    if precision.isdigit():  # --precision counted digits before it meant fp32/bf16
        fail(f"--precision {precision}: the compute precision is fp32, bf16 or auto; digits are --digits {precision}", 2)
    req = DumpRequest(run_dir, src_texts=src or [], tgt_texts=tgt or [], input=input, ref=ref, output=output,
                      fmt=fmt, digits=digits, selection=selection_from_options(kind or [], layer or [], head or [], show),
                      plot_dir=plot, align=align, align_row=align_row, align_method=align_method,
                      align_select=align_select, html=html, gold=gold,
                      decode=DecodeOptions(beam=beam, alpha=alpha, precision=precision),
                      batch_size=batch_size, device=device, show=show, stdin=sys.stdin.buffer,
                      input_errors=input_errors)
    req = with_default_output(req, sys.stdout.isatty())
    view = err if req.stdout_has_data else out
    on_record = (lambda rec: view.print(attention_heatmap(rec))) if show else None
    with err.status("attention: loading the model") as status:
        report = dump_attention(req, sys.stdout.buffer, on_record,
                                lambda n: status.update(f"attention: {n} sentence{'s' * (n != 1)}"))
    attention_summary(err, report, req.output, html)


@app.command("inspect")
@user_errors
def inspect_run(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="FILE.png: a heatmap of the positional-encoding matrix. A folder (or a path without .png): pe.png and the training curves from metrics.jsonl."),
    positions: Optional[int] = typer.Option(None, "--positions", min=1, help="Rows of the --plot (default: data.max_len + 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """What a run directory holds: recipe, vocabularies, parameters per module, training history, checkpoints."""
    import json

    from .commands.inspect import inspect_run as summarise, write_plots
    from .views import run_summary

    summary = summarise(run_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json()))
    else:
        run_summary(out, summary)
    if plot is not None:
        written = write_plots(run_dir, plot, positions)
        err.print(f"wrote {', '.join(p.name for p in written)} to {plot}" if len(written) > 1 else f"wrote {plot}")


from . import cli_models  # noqa: E402,F401  (registers tx import marian, tx export huggingface)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
