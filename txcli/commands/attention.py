"""`tx attention-dump`: sentences -> (translated or given targets) -> every attention weight,
streamed to jsonl / npz, PNG heatmaps, or Pharaoh word alignments scored against gold.

Sentences are read as a stream in windows; inside a window they are sorted by length and cut
into batches, so memory stays flat however many sentences there are.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Iterator, Optional

from ..alignment import METHODS, Method, SentenceScores, corpus_aer, select_method, split, standard_method
from ..attention import (AXIS_LABELS, KIND_NAMES, KINDS, JsonlWriter, NpzWriter, Selection, SentenceAttention,
                         collect_attention, format_pharaoh, parse_pharaoh, subword_word_ids)
from ..checkpoint import open_atomic, write_bytes_atomic
from ..decoding import Decoding, make_generator, translate_rows
from ..errors import TxError, UsageError
from ..options import DecodeOptions, check_choice
from ..plots import plot_heads
from ..search import SearchConfig
from ..streams import ReplacedLines, input_errors, numbered_lines, open_output
from ..tokenizer import BOS_ID, EOS_ID
from .run import Run, open_for_decoding, run_decoding

WINDOW = 128              # sentences read ahead and sorted by length
ATTENTION_CELLS = 1 << 16  # batch size x longest side^2: bounds the weights one batch holds


@dataclass
class DumpRequest:
    run_dir: Path
    src_texts: list[str] = field(default_factory=list)   # --src
    tgt_texts: list[str] = field(default_factory=list)   # --tgt
    input: Optional[Path] = None                         # --input ('-' = stdin)
    ref: Optional[Path] = None                           # --ref
    output: Optional[Path] = None                        # None: no dump file; '-': stdout
    fmt: str = "jsonl"
    digits: int = 4                                      # kept in jsonl weights
    selection: Selection = Selection()
    plot_dir: Optional[Path] = None
    align: bool = False
    # the step that predicts a word speaks for it: the step that reads it is already gathering the
    # source of the next word (bench/attention_aer.py compares the two rows)
    align_row: str = "output"
    align_method: str = "predict"                        # one of txcli.alignment.METHODS
    align_select: bool = False                           # choose the method on --gold (first half)
    html: Optional[Path] = None                          # the explorer page (txcli/explorer.py)
    gold: Optional[Path] = None
    decode: DecodeOptions = field(default_factory=DecodeOptions)  # when translating
    batch_size: int = 64
    device: str = "auto"
    show: bool = False                                   # draw records in the terminal
    stdin: Optional[BinaryIO] = None                     # what '-' reads
    input_errors: str = "strict"                         # or replace: invalid UTF-8 in --input/--ref

    @property
    def stdout_has_data(self) -> bool:
        return self.output is not None and str(self.output) == "-"


@dataclass
class DumpReport:
    sentences: int = 0
    translated: bool = False
    plots: list[Path] = field(default_factory=list)
    align_layer: Optional[int] = None
    aer_by_layer: dict[int, float] = field(default_factory=dict)  # with --gold: every decoder layer
    align_method: Optional[str] = None                   # the method written, in words
    align_row: str = "output"                            # the decoder row that method reads
    aer_by_method: dict[str, dict] = field(default_factory=dict)  # with --gold: method -> {layer or "all": AER}
    select: Optional[dict] = None                        # with --align-select: tune/held-out sizes and AERs
    html_bytes: Optional[int] = None
    warning: Optional[str] = None  # about the decoding settings (bf16 where it is slow)
    input_warning: Optional[str] = None  # lines whose invalid UTF-8 was replaced


# --------------------------------------------------------------------------- input


def request_sentences(req: DumpRequest, replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[str, Optional[str]]]:
    """The sentences a request names: (source, target or None) pairs from --src/--tgt or
    --input/--ref, checked for alignment. (Not data.read_pairs, which reads a recipe's corpus.)"""
    if req.input is None:
        targets = req.tgt_texts or [None] * len(req.src_texts)
        yield from zip(req.src_texts, targets)
        return
    sources = numbered_lines(req.input, req.stdin, replaced)
    if req.ref is None:
        for _, text in sources:
            yield text, None
        return
    refs = numbered_lines(req.ref, req.stdin, replaced)
    for src, ref in zip_longest(sources, refs):
        if src is None or ref is None:
            longer = req.input if ref is None else req.ref
            raise UsageError(f"{req.input} and {req.ref} have different numbers of lines ({longer} is longer)")
        yield src[1], ref[1]


def selection_from_options(kinds: list[str], layers: list[int], heads: list[int], show: bool) -> Selection:
    """--kind/--layer/--head as a Selection. --show draws one kind, layer and head: cross-attention
    of the last layer, head 0, unless chosen."""
    if not show:
        return Selection(tuple(kinds) if kinds else KINDS, tuple(layers) if layers else None,
                         tuple(heads) if heads else None)
    for option, values in (("--kind", kinds), ("--layer", layers), ("--head", heads)):
        if len(values) > 1:
            raise UsageError(f"--show draws one kind, layer and head: give {option} once")
    return Selection(((kinds or ["cross"])[0],), ((layers or [-1])[0],), ((heads or [0])[0],))


def with_default_output(req: DumpRequest, stdout_is_terminal: bool) -> DumpRequest:
    """Where the dump goes when --output is not given: stdout, unless only pictures were asked
    for (--plot, --show); alignments always go somewhere. npz is refused on a terminal."""
    if req.output is None and (req.align or not (req.plot_dir or req.show or req.html)):
        req.output = Path("-")
    if req.stdout_has_data and req.fmt == "npz" and not req.align and stdout_is_terminal:
        raise UsageError("npz is binary: give --output FILE (or pipe stdout)")
    return req


# The mistakes in the options that need no model: (the mistake, what to say), checked in order,
# the first that holds is reported. A message that names values is a function of the request.
_MISTAKES: list[tuple[Callable[[DumpRequest], object], object]] = [
    (lambda r: r.input is not None and r.src_texts, "give --src TEXT or --input FILE, not both"),
    (lambda r: r.input is None and not r.src_texts, "nothing to read: give --src TEXT or --input FILE ('-' for stdin)"),
    (lambda r: r.tgt_texts and r.input is not None, "--tgt goes with --src; with --input use --ref FILE"),
    (lambda r: r.ref is not None and r.input is None, "--ref goes with --input; with --src use --tgt TEXT"),
    (lambda r: r.tgt_texts and len(r.tgt_texts) != len(r.src_texts),
     lambda r: f"{len(r.src_texts)} --src but {len(r.tgt_texts)} --tgt: give one target per source"),
    (lambda r: r.gold is not None and not r.align, "--gold scores word alignments: add --align"),
    (lambda r: r.gold is not None and not r.gold.is_file(), lambda r: f"{r.gold}: file not found"),
    (lambda r: r.align and "cross" not in r.selection.kinds,
     "--align reads cross-attention: drop --kind or use --kind cross"),
    (lambda r: r.align and r.selection.layers is not None and len(r.selection.layers) != 1,
     "--align uses one decoder layer: give --layer once"),
    (lambda r: r.align_method not in METHODS,
     lambda r: f"--align-method {r.align_method!r}: expected one of {', '.join(METHODS)}"),
    (lambda r: r.align_method != "predict" and not r.align,
     "--align-method chooses how --align links words: add --align"),
    (lambda r: r.align_row == "input" and r.align_method not in ("predict", "shift"),
     lambda r: f"--align-row input is --align-method shift: it does not go with {r.align_method}"),
    (lambda r: r.align_method in ("layers", "bidir") and r.selection.layers is not None,
     lambda r: f"--align-method {r.align_method} uses every decoder layer: drop --layer"),
    (lambda r: r.align_select and (r.gold is None or r.align_method != "predict" or r.align_row != "output"),
     "--align-select chooses the method on gold alignments: give --gold, and no --align-method or --align-row"),
    (lambda r: r.align_select and r.selection.layers is not None,
     "--align-select tries every decoder layer: drop --layer"),
    (lambda r: r.html is not None and str(r.html) == "-",
     "--html writes a page file: give its name (stdout carries the dump or the alignments)"),
    (lambda r: r.html is not None and Path(r.html).is_dir(),
     lambda r: f"--html {r.html}: is a folder; give the page's file name"),
    (lambda r: r.html is not None and r.output is not None and str(r.html) == str(r.output),
     lambda r: f"--html {r.html} is also the --output file"),
    (lambda r: not 0 <= r.digits <= 8, lambda r: f"--digits {r.digits}: expected 0..8"),
]


def check_options(req: DumpRequest) -> None:
    """The mistakes in the options that need no model, before it is loaded."""
    check_choice("--format", req.fmt, ("jsonl", "npz"))
    check_choice("--align-row", req.align_row, ("output", "input"))
    for kind in req.selection.kinds:
        check_choice("--kind", kind, KINDS)
    for mistake, message in _MISTAKES:
        if mistake(req):
            raise UsageError(message(req) if callable(message) else message)


def check_request(req: DumpRequest, run: Run) -> None:
    """The mistakes that show against the model: layers and heads that do not exist."""
    try:
        req.selection.check(run.model)
    except ValueError as err:
        raise UsageError(str(err)) from None


# --------------------------------------------------------------------------- the pass


def translate(run: Run, src: list[list[int]], decoding: Decoding, generator=None) -> list[list[int]]:
    """Best output ids (no <s>, </s>) for source rows that end with </s> (with --sample: a sample,
    drawn from `generator`)."""
    return [h[0].tokens if h else [] for h in translate_rows(run.model, src, decoding, generator)]


def _encode_checked(tok, text: str, index: int, limit: int, side: str) -> list[int]:
    ids = tok.encode(text)
    if len(ids) + 1 > limit:
        raise TxError(f"line {index + 1}: the {side} has {len(ids) + 1} tokens, more than the model's "
                      f"{limit} positions")
    return ids


def _batches(lengths: list[int], batch_size: int) -> Iterator[list[int]]:
    """Indices sorted by length, cut into batches of at most batch_size sentences and
    ATTENTION_CELLS padded attention cells (batch x longest^2)."""
    batch: list[int] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):  # ascending: i is the longest yet
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * lengths[i] ** 2 > ATTENTION_CELLS):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def _longer_side(src: list[int], tgt: Optional[list[int]], settings: SearchConfig) -> int:
    """Tokens on the longer side; a translation counts with its longest possible length."""
    n_tgt = len(tgt) if tgt is not None else int(settings.max_len_a * (len(src) - 1) + settings.max_len_b)
    return max(len(src), n_tgt + 1)


def _window(run: Run, pairs: list[tuple[int, str, Optional[str]]], selection: Selection,
            decoding: Decoding, batch_size: int, generator=None) -> list[SentenceAttention]:
    limit = run.model.cfg.max_positions
    src = [_encode_checked(run.src_tok, s, i, limit, "source") + [EOS_ID] for i, s, _ in pairs]
    # None: to be translated; a blank source line stays untranslated, as in `tx translate`
    tgt: list[Optional[list[int]]] = [_encode_checked(run.tgt_tok, t, i, limit, "target") if t is not None
                                      else [] if not s.strip() else None for i, s, t in pairs]
    lengths = [_longer_side(s, t, decoding.search) for s, t in zip(src, tgt)]
    records: list[Optional[SentenceAttention]] = [None] * len(pairs)
    for batch in _batches(lengths, batch_size):
        todo = [k for k in batch if tgt[k] is None]
        if todo:
            for k, ids in zip(todo, translate(run, [src[k] for k in todo], decoding, generator)):
                tgt[k] = ids[: limit - 1]
        tgt_in = [[BOS_ID] + tgt[k] for k in batch]
        weights = collect_attention(run.model, [src[k] for k in batch], tgt_in, selection)
        for k, w, t_in in zip(batch, weights, tgt_in):
            index, src_text, tgt_text = pairs[k]
            records[k] = SentenceAttention(
                index=index, src_tokens=[run.src_tok.id_to_token(i) for i in src[k]],
                tgt_tokens=[run.tgt_tok.id_to_token(i) for i in t_in], heads=selection.heads_of(run.model),
                weights=w, src=src_text, tgt=tgt_text if tgt_text is not None else run.tgt_tok.decode(tgt[k]))
    return records


def attention_stream(run: Run, pairs: Iterable[tuple[str, Optional[str]]], selection: Selection,
                     decoding: Decoding, batch_size: int = 64) -> Iterator[SentenceAttention]:
    """One record per input pair, in input order; a pair without a target is translated first."""
    generator = make_generator(decoding)  # --sample: one seeded stream across windows, as in tx translate
    window: list[tuple[int, str, Optional[str]]] = []
    for index, (src, tgt) in enumerate(pairs):
        window.append((index, src, tgt))
        if len(window) == WINDOW:
            yield from _window(run, window, selection, decoding, batch_size, generator)
            window = []
    if window:
        yield from _window(run, window, selection, decoding, batch_size, generator)


# --------------------------------------------------------------------------- outputs


def default_align_layer(run: Run) -> int:
    """The penultimate decoder layer of three or more, else the last: the first layer aligns worst
    and the penultimate best, as Garg et al. (2019) found for real language pairs
    (bench/attention_aer.py prints the AER of every layer)."""
    layers = run.model.cfg.decoder_layers
    return layers - 2 if layers >= 3 else layers - 1


class Aligner:
    """Pharaoh lines from records (txcli/alignment.py). With gold alignments, the AER of every
    method and layer; with --align-select the method is chosen at the end, so lines wait for it."""

    def __init__(self, run: Run, req: DumpRequest, layer: int, heads: list[int]):
        self.layer, self.heads = layer, heads
        self.layers = list(range(run.model.cfg.decoder_layers))
        self.wordpiece = run.recipe.tokenizer.kind == "wordpiece"
        self.gold_path, self.select = req.gold, req.align_select
        name = "shift" if req.align_row == "input" and req.align_method == "predict" else req.align_method
        self.method: Optional[Method] = None if self.select else standard_method(name, layer, self.layers)
        self.gold = numbered_lines(req.gold) if req.gold is not None else None
        self.scores: list[SentenceScores] = []  # kept only with gold (AER tables, selection)
        self.links: dict[int, list[tuple[int, int]]] = {}  # index -> links, for the explorer page
        self.sure: list[set] = []
        self.possible: list[set] = []

    def line(self, rec: SentenceAttention) -> Optional[str]:
        """The sentence's Pharaoh line, or None while --align-select has not chosen yet."""
        src_words = subword_word_ids(rec.src_tokens, self.wordpiece)
        tgt_words = subword_word_ids(rec.tgt_tokens, self.wordpiece)
        rows = ("output", "input") if self.gold is not None else (self.method.row,)
        scores = SentenceScores(rec.weights["cross"], src_words, tgt_words, rows)
        if self.gold is not None:
            self._add_gold(rec.index)
            self.scores.append(scores)
        if self.method is None:
            return None
        found = scores.links(self.method)
        self.links[rec.index] = found
        return format_pharaoh(found)

    def _add_gold(self, index: int) -> None:
        item = next(self.gold, None)
        if item is None:
            raise UsageError(f"{self.gold_path}: has {index} lines, fewer than the input")
        number, text = item
        try:
            sure, possible = parse_pharaoh(text)
        except ValueError as err:
            raise UsageError(f"{self.gold_path}: line {number}: {err}") from None
        self.sure.append(sure)
        self.possible.append(possible)

    def finish(self, report: DumpReport, indices: list[int]) -> list[str]:
        """Score every method on the gold; with --align-select choose one and return the lines
        held back (for the sentences `indices`, in order)."""
        if self.gold is None:
            report.align_method, report.align_row = self.method.describe(), self.method.row
            return []
        if next(self.gold, None) is not None:
            raise UsageError(f"{self.gold_path}: has more lines than the input")
        every = range(len(self.scores))
        aer = lambda m, idx=every: corpus_aer(self.scores, m, self.sure, self.possible, idx)  # noqa: E731
        for name in ("predict", "shift"):
            report.aer_by_method[name] = {layer: aer(standard_method(name, layer, self.layers)) for layer in self.layers}
        for name in ("layers", "bidir"):
            report.aer_by_method[name] = {"all": aer(standard_method(name, self.layer, self.layers))}
        held: list[str] = []
        if self.select:
            tune, rest = split(len(self.scores))
            self.method, tune_aer = select_method(self.scores, self.sure, self.possible, self.layers,
                                                  len(self.heads), tune)
            report.select = {"tune": len(tune), "heldout": len(rest), "tune_aer": tune_aer,
                             "heldout_aer": aer(self.method, rest) if len(rest) else None, "all_aer": aer(self.method)}
            for index, scores in zip(indices, self.scores):
                self.links[index] = scores.links(self.method)
                held.append(format_pharaoh(self.links[index]))
        row = self.method.row if self.method.name in ("predict", "shift") else "output"
        report.aer_by_layer = report.aer_by_method["predict" if row == "output" else "shift"]
        report.align_method = self.method.describe() if not self.select else _describe_heads(self.method, self.heads)
        report.align_row = self.method.row
        return held

    def gold_links(self) -> list[tuple[set, set]]:
        return list(zip(self.sure, self.possible))


def _describe_heads(method: Method, heads: list[int]) -> str:
    """A selected method in the model's head numbers (--head may have kept only some)."""
    return Method(method.name, method.row, tuple((layer, None if h is None else heads[h]) for layer, h in method.parts),
                  method.rule).describe()


def _plot_record(rec: SentenceAttention, plot_dir: Path) -> list[Path]:
    written = []
    for kind, layers in rec.weights.items():
        rows, cols = rec.axis_tokens(kind)
        for layer, w in layers.items():
            path = plot_dir / f"{rec.index:04d}-{kind}-layer{layer}.png"
            title = f"sentence {rec.index}: {KIND_NAMES[kind]}, layer {layer}"
            write_bytes_atomic(path, plot_heads(w, rec.heads, rows, cols, title, AXIS_LABELS[kind]))
            written.append(path)
    return written


def _only_layer(rec: SentenceAttention, layer: int) -> SentenceAttention:
    """With --align every decoder layer's cross-attention is collected for the AER table;
    plots and --show keep only the alignment layer."""
    return SentenceAttention(rec.index, rec.src_tokens, rec.tgt_tokens, rec.heads,
                             {"cross": {layer: rec.weights["cross"][layer]}}, rec.src, rec.tgt)


def dump_attention(req: DumpRequest, stdout: BinaryIO,
                   on_record: Optional[Callable[[SentenceAttention], None]] = None,
                   progress: Optional[Callable[[int], None]] = None) -> DumpReport:
    """The whole command: open the run, stream records to the chosen outputs."""
    check_options(req)
    run = open_for_decoding(req.run_dir, req.device)
    check_request(req, run)
    decoding = run_decoding(run, req.decode)
    selection = req.selection
    report = DumpReport(translated=not (req.tgt_texts or req.ref), warning=decoding.warning)
    aligner = None
    if req.align:
        layer = selection.layers_of("cross", run.model)[0] if selection.layers else default_align_layer(run)
        report.align_layer = layer
        aligner = Aligner(run, req, layer, selection.heads_of(run.model))
        # every decoder layer for the AER table; the page (--html) also keeps the kinds asked for
        kinds = tuple(k for k in KINDS if k in selection.kinds or k == "cross") if req.html else ("cross",)
        selection = Selection(kinds=kinds, layers=None, heads=selection.heads)
    replaced = input_errors(req.input_errors)
    records = attention_stream(run, request_sentences(req, replaced), selection, decoding, req.batch_size)
    indices: list[int] = []
    with open_output(req.output, stdout) as stream, _page(req, run) as page:
        writer = None
        if not req.align and req.output is not None:
            writer = NpzWriter(stream) if req.fmt == "npz" else JsonlWriter(stream, req.digits)
        for rec in records:
            if page is not None:
                page.add(rec)
            if aligner is not None:
                line = aligner.line(rec)
                if line is not None:
                    stream.write((line + "\n").encode("utf-8"))
                rec = _only_layer(rec, report.align_layer)
            if writer is not None:
                writer.write(rec)
            if req.plot_dir is not None:
                report.plots += _plot_record(rec, req.plot_dir)
            if on_record is not None:
                on_record(rec)
            indices.append(rec.index)
            report.sentences += 1
            if progress is not None:
                progress(report.sentences)
        if writer is not None:
            writer.close()
        if aligner is not None:  # inside: a gold file too long keeps no output
            for line in aligner.finish(report, indices):
                stream.write((line + "\n").encode("utf-8"))
            if page is not None:
                page.set_alignments(aligner.links, aligner.gold_links() if req.gold else None, report)
    if req.html is not None:
        report.html_bytes = req.html.stat().st_size
    report.input_warning = replaced and replaced.warning()
    return report


@contextmanager
def _page(req: DumpRequest, run: Run):
    """The explorer page being written (None without --html); it appears only when whole."""
    if req.html is None:
        yield None
        return
    from ..explorer import PageWriter

    with open_atomic(req.html) as f:
        page = PageWriter(f, precision=req.digits, title=f"tx attention: {run.run_dir.name}",
                          wordpiece=run.recipe.tokenizer.kind == "wordpiece", run_dir=run.run_dir)
        yield page
        page.close()
