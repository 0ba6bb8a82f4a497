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
    rich_markup_mode="markdown",  # docstring lines join into paragraphs; a blank line separates them
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


def _memory_warning(r) -> None:
    """load_recipe refuses a model that cannot fit; one that would take most of the machine is a warning."""
    from .recipe import memory_estimate

    warning = memory_estimate(r).warning
    if warning:
        err.print(f"[yellow]warning:[/] {_escape(warning)}")


# ---------------------------------------------------------------------------------------------


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
    _memory_warning(r)
    estimate = memory_estimate(r)
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
    from .commands.tokenize import train_tokenizers

    r = _load(recipe, set_)
    with err.status(f"training {r.tokenizer.kind} tokenizer ({r.tokenizer.vocab_size} subwords)"):
        written = train_tokenizers(r, force=force)
    from .commands.tokenize import load_tokenizers

    src_tok, tgt_tok = load_tokenizers(r.run_dir, r.tokenizer.joint)
    for path in written:
        err.print(f"wrote {path}")
    err.print(f"vocabulary: source {src_tok.vocab_size}, target {tgt_tok.vocab_size}")


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
    precision: int = typer.Option(4, "--precision", help="Digits kept in jsonl weights."),
    kind: Optional[List[str]] = typer.Option(None, "--kind", help="Keep only enc, dec or cross (repeatable)."),
    layer: Optional[List[int]] = typer.Option(None, "--layer", help="Keep only this layer, 0-based, -1 = last (repeatable)."),
    head: Optional[List[int]] = typer.Option(None, "--head", help="Keep only this head, 0-based (repeatable)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write PNG heatmaps here: one per sentence, kind and layer, every head in a grid."),
    show: bool = typer.Option(False, "--show", help="Draw one kind, layer and head per sentence in the terminal (default: cross, last layer, head 0)."),
    align: bool = typer.Option(False, "--align", help="Write word alignments (Pharaoh i-j) from cross-attention instead of weights."),
    align_row: str = typer.Option("output", "--align-row", help="Which decoder step speaks for a target word: output (the step that predicts it) or input (the step that reads it, predicting the next)."),
    gold: Optional[Path] = typer.Option(None, "--gold", help="Gold alignments (Pharaoh): print the AER of every decoder layer."),
    beam: Optional[int] = typer.Option(None, "--beam", min=1, help="Beam size when translating (default: the recipe's decode.beam)."),
    alpha: Optional[float] = typer.Option(None, "--alpha", min=0.0, help="Length penalty when translating (default: decode.alpha)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sentences per forward pass."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
):
    """Every attention weight of a model for some sentences: encoder self-attention, decoder
    self-attention and cross-attention, every layer and head, as data (jsonl/npz), pictures
    (--plot, --show) or word alignments (--align)."""
    from .attention import KINDS, Selection
    from .commands.attention import DumpRequest, dump_attention

    _check_choice("--format", fmt, ("jsonl", "npz"))
    _check_choice("--align-row", align_row, ("output", "input"))
    _check_choice("--device", device, ("auto", "cpu", "cuda"))
    for k in kind or []:
        _check_choice("--kind", k, KINDS)
    selection = Selection(tuple(kind) if kind else KINDS, tuple(layer) if layer else None, tuple(head) if head else None)
    if show:
        selection = _show_selection(kind, layer, head)
    if output is None and not (plot or show) or (align and output is None):
        output = Path("-")
    stdout_has_data = output is not None and str(output) == "-"
    if stdout_has_data and fmt == "npz" and not align and sys.stdout.isatty():
        fail("npz is binary: give --output FILE (or pipe stdout)", 2)
    view = err if stdout_has_data else out
    req = DumpRequest(run_dir, src_texts=src or [], tgt_texts=tgt or [], input=input, ref=ref, output=output,
                      fmt=fmt, precision=precision, selection=selection, plot_dir=plot, align=align,
                      align_row=align_row, gold=gold, beam=beam, alpha=alpha, batch_size=batch_size, device=device)
    on_record = (lambda rec: view.print(_attention_heatmap(rec))) if show else None
    with err.status("attention: loading the model") as status:
        report = dump_attention(req, sys.stdout.buffer, on_record,
                                lambda n: status.update(f"attention: {n} sentence{'s' * (n != 1)}"))
    _attention_summary(report, output)


def _check_choice(option: str, value: str, choices) -> None:
    if value not in choices:
        fail(f"{option} {value!r}: expected one of {', '.join(choices)}", 2)


def _show_selection(kind, layer, head):
    """--show draws one kind, layer and head: cross-attention of the last layer, head 0 unless chosen."""
    from .attention import Selection

    for option, values in (("--kind", kind), ("--layer", layer), ("--head", head)):
        if values and len(values) > 1:
            fail(f"--show draws one kind, layer and head: give {option} once", 2)
    return Selection(((kind or ["cross"])[0],), ((layer or [-1])[0],), ((head or [0])[0],))


def _attention_summary(report, output) -> None:
    what = "alignments" if report.align_layer is not None else "attention"
    where = "" if output is None else " to stdout" if str(output) == "-" else f" to {output}"
    translated = ", translated first" if report.translated else ", forced decoding"
    err.print(f"{what} of {report.sentences} sentence{'s' * (report.sentences != 1)}{translated}{where}")
    if report.align_layer is not None:
        err.print(f"alignments from decoder layer {report.align_layer}")
    for layer, aer in report.aer_by_layer.items():
        mark = "  <- written" if layer == report.align_layer else ""
        err.print(f"AER layer {layer}: {aer:.3f}{mark}")
    if report.aer_by_layer and report.translated:
        err.print("[yellow]note[/]: the targets are the model's translations; gold alignments usually refer to "
                  "reference targets (give them with --ref)")
    if report.plots:
        err.print(f"wrote {len(report.plots)} heatmaps to {report.plots[0].parent}")


HEATMAP_COLOURS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis


def _heat_colour(value: float) -> str:
    x = min(max(value, 0.0), 1.0) * (len(HEATMAP_COLOURS) - 1)
    i = min(int(x), len(HEATMAP_COLOURS) - 2)
    a, b = HEATMAP_COLOURS[i], HEATMAP_COLOURS[i + 1]
    r, g, bl = (round(a[c] + (b[c] - a[c]) * (x - i)) for c in range(3))
    return f"rgb({r},{g},{bl})"


def _attention_heatmap(rec):
    """One kind/layer/head of a record as text: key tokens written downwards over the columns,
    query tokens on the left, each cell the weight in tenths (blank below 0.05) on a viridis colour."""
    from rich.text import Text

    from .attention import KIND_NAMES

    (kind, layers), = rec.weights.items()
    (layer, weights), = layers.items()
    rows, cols = (([t[:10] for t in side]) for side in rec.axis_tokens(kind))
    width = max(len(r) for r in rows)
    text = Text(f"sentence {rec.index}: {KIND_NAMES[kind]}, layer {layer}, head {rec.heads[0]}\n", style="bold")
    for d in range(max(len(c) for c in cols)):
        text.append(" " * (width + 1) + "".join(f"{c[d] if d < len(c) else ' '} " for c in cols) + "\n")
    for label, row in zip(rows, weights[0]):
        text.append(label.rjust(width) + " ")
        for value in row:
            tenths = min(round(float(value) * 10), 9)
            fg = "black" if value > 0.6 else "white"
            text.append(f"{tenths if tenths else ' '} ", style=f"{fg} on {_heat_colour(float(value))}")
        text.append("\n")
    return text


@app.command("inspect")
@user_errors
def inspect(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Write a PNG heatmap of the positional-encoding matrix here."),
    positions: Optional[int] = typer.Option(None, "--positions", min=1, help="Rows of the --plot (default: data.max_len + 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """What a run directory holds: recipe, vocabularies, parameters per module, training history, checkpoints."""
    import json

    from .commands.inspect import inspect_run, positional_encoding_png

    summary = inspect_run(run_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json()))
    else:
        _print_summary(summary)
    if plot is not None:
        from .checkpoint import write_bytes_atomic

        write_bytes_atomic(plot, positional_encoding_png(run_dir, positions))
        err.print(f"wrote {plot}")


def _print_summary(s) -> None:
    from rich.table import Table

    out.print(f"[bold]run[/] {_escape(s.run_dir)}")
    recipe = Table.grid(padding=(0, 1))
    for section, values in s.recipe.items():
        recipe.add_row(f"[bold]{section}[/]", _escape(_flat(values)))
    out.print(recipe)
    if s.vocab:
        joint = " (joint)" if s.vocab["joint"] else ""
        out.print(f"[bold]vocabulary[/]: source {s.vocab['source']:,}, target {s.vocab['target']:,}{joint}")
    if s.total_params is not None:
        table = Table("module", "parameters", "shares", title=f"parameters: {s.total_params:,} ({s.model_bytes / 1e6:.1f} MB file)", title_justify="left")
        table.columns[1].justify = "right"
        for m in s.modules:
            depth = m.name.count(".")
            if depth < 2:
                table.add_row("  " * depth + m.name, f"{m.params:,}", ", ".join(m.shared_from))
        out.print(table)
    if s.history is not None:
        _print_history(s.history)
    if s.checkpoints:
        out.print("[bold]checkpoints[/]")
        for c in s.checkpoints:
            step = f" (step {c.step:,})" if c.name == "last" and c.step is not None else ""
            scores = ", ".join(f"{k} {v:.4g}" for k, v in c.scores.items())
            out.print(f"  {c.name}{step}{': ' + scores if scores else ''}")
    for note in s.notes:
        out.print(f"[yellow]{_escape(note)}[/]")


def _flat(value, prefix: str = "") -> str:
    """A recipe section on one line: "d_model=256, heads=4, ...", nested keys dotted, nulls left out."""
    if not isinstance(value, dict):
        return str(value)
    items = []
    for key, v in value.items():
        if isinstance(v, dict):
            items.append(_flat(v, f"{prefix}{key}."))
        elif v is not None:
            items.append(f"{prefix}{key}={v}")
    return ", ".join(i for i in items if i)


def _print_history(h) -> None:
    parts = [f"{h.steps:,} steps"]
    if h.epochs is not None:
        parts.append(f"{h.epochs:.2f} epochs")
    if h.elapsed_s is not None:
        parts.append(f"{h.elapsed_s / 60:.1f} min")
    if h.tokens_per_s is not None:
        parts.append(f"{h.tokens_per_s:,.0f} tokens/s")
    if h.last_loss is not None:
        parts.append(f"last loss {h.last_loss:.4f}")
    out.print(f"[bold]training[/]: {', '.join(parts)}; {h.validations} validations")
    for b in h.best:
        out.print(f"  best {b.metric}: {b.value:.4g} at step {b.step:,}")
    if h.unreadable_lines:
        out.print(f"[yellow]  {h.unreadable_lines} unreadable line(s) in metrics.jsonl skipped[/]")


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
    from .openmp import short_spin_waits

    short_spin_waits()  # before torch loads OpenMP
    from .commands.train import describe, train as run_training
    from .progress import train_progress

    r = _load(recipe, set_)
    _memory_warning(r)
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
MaxLenAOpt = typer.Option(None, "--max-len-a", help="Longest output: a x source length + b tokens (default: decode.max_len_a).")
MaxLenBOpt = typer.Option(None, "--max-len-b", help="See --max-len-a (default: decode.max_len_b).")
MinLenOpt = typer.Option(None, "--min-len", help="No end of sentence before this many tokens (default: decode.min_len).")
NoRepeatOpt = typer.Option(None, "--no-repeat-ngram", help="Never repeat an n-gram of this size; 0 allows it (default: decode.no_repeat_ngram).")
BatchTokensOpt = typer.Option(None, "--batch-tokens", help="Source tokens (with padding) per batch (default: decode.batch_tokens).")
SampleOpt = typer.Option(False, "--sample", help="Sample tokens at random instead of beam search.")
TemperatureOpt = typer.Option(1.0, "--temperature", help="With --sample: flatten (>1) or sharpen (<1) the distribution.")
TopKOpt = typer.Option(0, "--top-k", help="With --sample: draw from the k likeliest tokens only (0: all).")
TopPOpt = typer.Option(1.0, "--top-p", help="With --sample: draw from the smallest set of tokens holding this probability.")
SeedOpt = typer.Option(1, "--seed", help="With --sample: random seed.")
PrecisionOpt = typer.Option("fp32", "--precision", help="fp32, bf16 (autocast; fast only on GPUs and CPUs with AVX512-BF16 or AMX), or auto (bf16 where it is fast).")
DeviceOpt = typer.Option("auto", "--device", help="auto, cpu or cuda.")
ThreadsOpt = typer.Option(None, "--threads", min=1, help="CPU threads for the model (default: torch's choice).")


def _decoding(run, beam, alpha, max_len_a, max_len_b, min_len, no_repeat_ngram, batch_tokens, nbest,
              sample, temperature, top_k, top_p, seed, precision):
    from .commands.translate import DecodeOptions, resolve_decoding

    decoding = resolve_decoding(run, DecodeOptions(
        beam=beam, alpha=alpha, max_len_a=max_len_a, max_len_b=max_len_b, min_len=min_len,
        no_repeat_ngram=no_repeat_ngram, batch_tokens=batch_tokens, nbest=nbest, sample=sample,
        temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, precision=precision))
    if decoding.warning:
        err.print(f"[yellow]warning:[/] {_escape(decoding.warning)}")
    return decoding


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
    """The model's log-probability of given translations (every target token and the end of sentence), one line
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
    if summary.warning:
        err.print(f"[yellow]warning:[/] {_escape(summary.warning)}")
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
    with err.status("evaluate: translating" if hyp is None else "evaluate: scoring") as status:
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
