"""Terminal rendering for the CLI: attention heatmaps, the run summary of `tx inspect`, the
evaluation table, summaries and warnings. Part of the CLI layer beside progress.py: it only draws
what the commands return, on the console it is given.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text


def warn(console: Console, message: str) -> None:
    console.print(f"[yellow]warning:[/] {escape(message)}")


def truncation_warning(console: Console, count: int, max_len: int, what: str = "lines") -> None:
    if count:
        warn(console, f"{count} {what} longer than the model's maximum of {max_len} subword tokens were truncated")


def attention_summary(err: Console, report, output, html=None) -> None:
    """What attention-dump wrote, on stderr."""
    what = "alignments" if report.align_layer is not None else "attention"
    where = "" if output is None else " to stdout" if str(output) == "-" else f" to {output}"
    translated = ", translated first" if report.translated else ", forced decoding"
    err.print(f"{what} of {report.sentences} sentence{'s' * (report.sentences != 1)}{translated}{where}")
    by_layer = report.align_method is None or report.align_method.startswith(("predict", "shift"))
    if report.align_layer is not None:
        err.print(f"alignments from decoder layer {report.align_layer}" if by_layer
                  else f"alignments by {escape(report.align_method)}")
    for layer, aer in report.aer_by_layer.items():
        mark = "  <- written" if layer == report.align_layer and by_layer else ""
        err.print(f"AER layer {layer}: {aer:.3f}{mark}")
    if report.aer_by_method:
        err.print("AER by method: " + "; ".join(
            f"{name} " + ", ".join(f"{'all layers' if k == 'all' else f'layer {k}'} {v:.3f}" for k, v in by.items())
            for name, by in report.aer_by_method.items()))
    if report.select:
        sel = report.select
        held = "n/a (one sentence)" if sel["heldout_aer"] is None else f"{sel['heldout_aer']:.3f}"
        err.print(f"selected on the first {sel['tune']} sentences (AER {sel['tune_aer']:.3f})")
        err.print(f"AER on the other {sel['heldout']} sentences: {held}")
    if report.html_bytes is not None:
        err.print(f"wrote the explorer page {escape(str(html))} ({report.html_bytes / 1e6:.2f} MB)")
    if report.aer_by_layer and report.translated:
        err.print("[yellow]note[/]: the targets are the model's translations; gold alignments usually refer to "
                  "reference targets (give them with --ref)")
    for message in (report.warning, report.input_warning):
        if message:
            warn(err, message)
    if report.plots:
        err.print(f"wrote {len(report.plots)} heatmaps to {report.plots[0].parent}")


HEATMAP_COLOURS = [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)]  # viridis


def heat_colour(value: float) -> str:
    x = min(max(value, 0.0), 1.0) * (len(HEATMAP_COLOURS) - 1)
    i = min(int(x), len(HEATMAP_COLOURS) - 2)
    a, b = HEATMAP_COLOURS[i], HEATMAP_COLOURS[i + 1]
    r, g, bl = (round(a[c] + (b[c] - a[c]) * (x - i)) for c in range(3))
    return f"rgb({r},{g},{bl})"


def attention_heatmap(rec) -> Text:
    """One kind/layer/head of a record as text: key tokens written downwards over the columns,
    query tokens on the left, each cell the weight in tenths (blank below 0.05) on a viridis colour."""
    from .attention import KIND_NAMES  # here: the module loads numpy and torch

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
            text.append(f"{tenths if tenths else ' '} ", style=f"{fg} on {heat_colour(float(value))}")
        text.append("\n")
    return text


def run_summary(out: Console, s) -> None:
    """The summary of `tx inspect` (commands.inspect.RunSummary)."""
    out.print(f"[bold]run[/] {escape(s.run_dir)}")
    recipe = Table.grid(padding=(0, 1))
    for section, values in s.recipe.items():
        recipe.add_row(f"[bold]{section}[/]", escape(_flat(values)))
    out.print(recipe)
    if s.init_from:
        out.print(f"[bold]initialised from[/] {escape(s.init_from)}")
    if s.imported:
        out.print(f"[bold]imported from[/] {escape(_import_line(s.imported))}")
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
        _history(out, s.history)
    if s.checkpoints:
        out.print("[bold]checkpoints[/]")
        for c in s.checkpoints:
            step = f" (step {c.step:,})" if c.name == "last" and c.step is not None else ""
            scores = ", ".join(f"{k} {v:.4g}" for k, v in c.scores.items())
            out.print(f"  {c.name}{step}{': ' + scores if scores else ''}")
    for note in s.notes:
        out.print(f"[yellow]{escape(note)}[/]")


def _import_line(record: dict) -> str:
    """import.json in one line: the source directory, its weights file, when, what wrote it."""
    parts = [str(record.get("source", "?"))]
    files = record.get("files")
    if isinstance(files, dict) and files:
        parts.append(f"{record.get('weights', '?')} and {len(files) - 1} other file(s), sha256 in import.json")
    if record.get("transformers_version"):
        parts.append(f"transformers {record['transformers_version']}")
    if record.get("imported_at"):
        parts.append(f"at {record['imported_at']}")
    return "; ".join(parts)


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


def _history(out: Console, h) -> None:
    parts = [f"{h.steps:,} steps"]
    if h.epochs is not None:
        parts.append(f"{h.epochs:.2f} epochs")
    if h.elapsed_s is not None:
        parts.append(f"{h.elapsed_s / 60:.1f} min")
    if h.tokens_per_s is not None:
        parts.append(f"{h.tokens_per_s:,.0f} tokens/s")
    if h.peak_rss_mb is not None:
        parts.append(f"peak memory {h.peak_rss_mb:,.0f} MB")
    if h.last_loss is not None:
        parts.append(f"last loss {h.last_loss:.4f}")
    out.print(f"[bold]training[/]: {', '.join(parts)}; {h.validations} validations")
    for b in h.best:
        out.print(f"  best {b.metric}: {b.value:.4g} at step {b.step:,}")
    if h.unreadable_lines:
        out.print(f"[yellow]  {h.unreadable_lines} unreadable line(s) in metrics.jsonl skipped[/]")


def evaluation_table(out: Console, result: dict) -> None:
    table = Table(title="tx evaluate", show_header=True)
    table.add_column("metric")
    table.add_column("score", justify="right")
    table.add_column("signature", style="dim")
    table.add_row("BLEU", f"{result['bleu']:.2f}", escape(result["bleu_signature"]))
    table.add_row("chrF", f"{result['chrf']:.2f}", escape(result["chrf_signature"]))
    out.print(table)
    out.print(f"{result['sentences']} sentences; {escape(result['bleu_detail'])}", highlight=False)


def data_table(out: Console, report: dict) -> None:
    """`tx data` (commands.data_report.DataReport.to_dict()): a row per corpus, then what each
    filter dropped with examples, then the cost of padding."""
    sample = f" (the first {report['sample']:,} pairs of each)" if report["sample"] else ""
    table = Table(title=f"training corpora{sample}", title_justify="left")
    for name in ("corpus", "weight", "read", "kept", "share", "passes/epoch"):
        table.add_column(name, justify="left" if name == "corpus" else "right")
    lengths = Table(title="subwords per pair kept: p50 / p90 / p99 / max", title_justify="left")
    for name in ("corpus", "source", "target"):
        lengths.add_column(name, justify="left" if name == "corpus" else "right")
    for c in report["corpora"]:
        name = escape(c["name"] + (f" {c['tag']}" if c["tag"] else ""))
        table.add_row(name, f"{c['weight']:g}", f"{c['read']:,}", f"{c['kept']:,} ({_share(c['kept'], c['read'])})",
                      f"{c['share']:.1%}", f"{c['epoch_passes']:.2f}")
        lengths.add_row(name, _lengths(c["lengths"]["src"]), _lengths(c["lengths"]["tgt"]))
    out.print(table)
    out.print(lengths)
    for c in report["corpora"]:
        if not c["dropped"]:
            continue
        out.print(f"[bold]{escape(c['name'])}[/]: dropped")
        for name, n in c["dropped"].items():
            out.print(f"  {name}: {n:,} ({_share(n, c['read'])})", highlight=False)
            for src, tgt in c["examples"].get(name, []):
                out.print(f"    [dim]{escape(_shown(src))} ||| {escape(_shown(tgt))}[/]", highlight=False)
    b = report["batching"]
    if b["batches"]:
        out.print(f"batching: a pool of {b['pool_pairs']:,} pairs makes {b['batches']:,} batches of at most "
                  f"{b['batch_tokens']:,} tokens ({b['pairs_per_batch']:.1f} pairs each); "
                  f"padding takes {b['padding']:.1%} of the batch cells", highlight=False)
    if report["trained_tokenizer"]:
        out.print("[dim]the tokenizer was trained into the run directory (tx train will use it)[/]")


def _share(n: int, total: int) -> str:
    return f"{n / total:.1%}" if total else "-"


def _lengths(lengths: dict) -> str:
    return " / ".join(str(lengths[k]) for k in ("p50", "p90", "p99", "max")) if lengths else "-"


def _shown(text: str, width: int = 60) -> str:
    """An example side on one line: control characters visible, long text cut."""
    text = repr(text)[1:-1] if not text.isprintable() else text
    return text if len(text) <= width else text[: width - 1] + "…"
def prepare_table(out: Console, result) -> None:
    """tx prepare: per corpus, pairs read and kept, what each filter dropped, speed, cache size."""
    table = Table("corpus", "read", "kept", "dropped", "pairs/s", "cache", title=f"tx prepare: {result.directory}",
                  title_justify="left")
    for c in result.corpora:
        dropped = ", ".join(f"{name} {n:,}" for name, n in sorted(c.counts.dropped.items(), key=lambda kv: -kv[1]) if n)
        speed = f"{c.counts.read / c.seconds:,.0f}" if c.seconds > 0 else "-"
        table.add_row(escape(c.name), f"{c.counts.read:,}", f"{c.counts.kept:,}", escape(dropped) or "none", speed,
                      f"{c.bytes / 1e6:,.1f} MB")
    out.print(table)
