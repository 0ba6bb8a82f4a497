"""Commands that look inside a model or a run: `tx attention-dump`, `tx inspect`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from .common import DeviceOpt, InputErrorsOpt, decode_options, err, fail, out, user_errors


@user_errors
@decode_options
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
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Sentences per forward pass."),
    input_errors: str = InputErrorsOpt,
    device: str = DeviceOpt,
    decode=None,
):
    """Every attention weight of a model for some sentences: encoder self-attention, decoder
    self-attention and cross-attention, every layer and head, as data (jsonl/npz), pictures
    (--plot, --show) or word alignments (--align)."""
    from ..commands.attention import DumpRequest, dump_attention, selection_from_options, with_default_output
    from ..views import attention_heatmap, attention_summary

    if decode.precision.isdigit():  # --precision counted digits before it meant fp32/bf16
        fail(f"--precision {decode.precision}: the compute precision is fp32, bf16 or auto; "
             f"digits are --digits {decode.precision}", 2)
    req = DumpRequest(run_dir, src_texts=src or [], tgt_texts=tgt or [], input=input, ref=ref, output=output,
                      fmt=fmt, digits=digits, selection=selection_from_options(kind or [], layer or [], head or [], show),
                      plot_dir=plot, align=align, align_row=align_row, align_method=align_method,
                      align_select=align_select, html=html, gold=gold, decode=decode, batch_size=batch_size, device=device, show=show, stdin=sys.stdin.buffer,
                      input_errors=input_errors)
    req = with_default_output(req, sys.stdout.isatty())
    view = err if req.stdout_has_data else out
    on_record = (lambda rec: view.print(attention_heatmap(rec))) if show else None
    with err.status("attention: loading the model") as status:
        report = dump_attention(req, sys.stdout.buffer, on_record,
                                lambda n: status.update(f"attention: {n} sentence{'s' * (n != 1)}"))
    attention_summary(err, report, req.output, html)


@user_errors
def inspect_run(
    run_dir: Path = typer.Argument(..., help="Run directory."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="FILE.png: a heatmap of the positional-encoding matrix. A folder (or a path without .png): pe.png and the training curves from metrics.jsonl."),
    positions: Optional[int] = typer.Option(None, "--positions", min=1, help="Rows of the --plot (default: data.max_len + 2)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
):
    """What a run directory holds: recipe, vocabularies, parameters per module, training history, checkpoints."""
    import json

    from ..commands.inspect import inspect_run as summarise, write_plots
    from ..views import run_summary

    summary = summarise(run_dir)
    if as_json:
        out.print_json(json.dumps(summary.to_json()))
    else:
        run_summary(out, summary)
    if plot is not None:
        written = write_plots(run_dir, plot, positions)
        err.print(f"wrote {', '.join(p.name for p in written)} to {plot}" if len(written) > 1 else f"wrote {plot}")
