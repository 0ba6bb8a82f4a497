"""`tx translate`: lines in, one translation per line out, in input order.

Input is read in chunks of at most CHUNK_LINES lines (on a pipe or a terminal a chunk also ends
when no more input is waiting, so a line typed in is answered at once). Inside a chunk sentences
are sorted by length and cut into batches of at most `batch_tokens` padded source tokens; the
translations go out in input order when the chunk is done. Memory is bounded by the chunk, not
by the input.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator, Optional

import torch

from ..checkpoint import open_atomic
from ..errors import TxError, UsageError
from ..precision import resolve_precision
from ..search import Hypothesis, SearchConfig, Workspace, beam_search, sample
from ..tokenizer import BOS_ID, EOS_ID
from .run import Run, open_run

CHUNK_LINES = 4096


@dataclass
class DecodeOptions:
    """What the user asked for on top of the recipe's `decode` section (None: the recipe's value)."""

    beam: Optional[int] = None
    alpha: Optional[float] = None
    max_len_a: Optional[float] = None
    max_len_b: Optional[int] = None
    min_len: Optional[int] = None
    no_repeat_ngram: Optional[int] = None
    batch_tokens: Optional[int] = None
    nbest: int = 1
    sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 1
    precision: str = "fp32"


@dataclass
class Decoding:
    """Resolved settings: the search configuration, the batch budget, the precision."""

    search: SearchConfig
    batch_tokens: int
    precision: str = "fp32"
    seed: int = 1
    warning: Optional[str] = None  # about the settings (bf16 where it is slow), for the user


def check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{flag} {value!r}: expected one of {', '.join(choices)}")


def decoding_precision(requested: str, device: torch.device) -> tuple[str, Optional[str]]:
    """--precision checked and resolved (auto -> bf16 or fp32), with a warning for slow bf16."""
    check_choice("--precision", requested, ("auto", "fp32", "bf16"))
    precision, warning = resolve_precision(requested, device)
    return precision, warning and f"--precision {warning}"


def open_for_decoding(run_dir: Path, device: str = "auto", threads: Optional[int] = None) -> Run:
    check_choice("--device", device, ("auto", "cpu", "cuda"))
    if threads is not None:
        torch.set_num_threads(threads)
    return open_run(run_dir, device)


def resolve_decoding(run: Run, opts: DecodeOptions) -> Decoding:
    """The recipe's `decode` section with the command-line values laid over it."""
    d = run.recipe.decode

    def pick(value, default):
        return default if value is None else value

    precision, warning = decoding_precision(opts.precision, run.device)
    checks = [(opts.beam, 1, "--beam"), (opts.batch_tokens, 1, "--batch-tokens"), (opts.nbest, 1, "--nbest"),
              (opts.min_len, 0, "--min-len"), (opts.no_repeat_ngram, 0, "--no-repeat-ngram"),
              (opts.max_len_b, 0, "--max-len-b"), (opts.max_len_a, 0, "--max-len-a"), (opts.alpha, 0, "--alpha"),
              (opts.top_k, 0, "--top-k")]
    for value, low, flag in checks:
        if value is not None and value < low:
            raise UsageError(f"{flag} {value}: must be at least {low}")
    try:
        search = SearchConfig(beam=pick(opts.beam, d.beam), nbest=opts.nbest, alpha=pick(opts.alpha, d.alpha),
                              max_len_a=pick(opts.max_len_a, d.max_len_a), max_len_b=pick(opts.max_len_b, d.max_len_b),
                              min_len=pick(opts.min_len, d.min_len),
                              no_repeat_ngram=pick(opts.no_repeat_ngram, d.no_repeat_ngram),
                              sample=opts.sample, temperature=opts.temperature, top_k=opts.top_k, top_p=opts.top_p)
    except ValueError as err:
        raise UsageError(f"decoding options: {err} (--beam, --nbest, --temperature, --top-p)") from None
    return Decoding(search, pick(opts.batch_tokens, d.batch_tokens), precision, opts.seed, warning)


# --------------------------------------------------------------------------- reading lines


def line_chunks(stream: BinaryIO, max_lines: int = CHUNK_LINES) -> Iterator[list[bytes]]:
    """Lines (without the newline) in chunks of at most max_lines. A last line without a newline
    still counts. On a pipe or terminal a chunk ends early when no more input is waiting."""
    fd = _fileno(stream)
    if fd is None:  # an in-memory stream: everything is already there
        chunk = []
        for raw in stream:
            chunk.append(raw.rstrip(b"\n"))
            if len(chunk) == max_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk
        return
    pending, chunk = b"", []
    while True:
        data = os.read(fd, 1 << 16)
        if not data:
            break
        *complete, pending = (pending + data).split(b"\n")
        for line in complete:
            chunk.append(line)
            if len(chunk) == max_lines:
                yield chunk
                chunk = []
        if chunk and not _input_waiting(fd):
            yield chunk
            chunk = []
    if pending:
        chunk.append(pending)
    if chunk:
        yield chunk


def _fileno(stream) -> Optional[int]:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None


def _input_waiting(fd: int) -> bool:
    try:
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError):  # not selectable: behave like a file
        return True


def decode_lines(chunk: list[bytes], first_number: int, name: str) -> tuple[list[str], Optional[TxError]]:
    """UTF-8 text of the lines up to the first bad one, and the error naming that line (or None)."""
    texts = []
    for number, raw in enumerate(chunk, start=first_number):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            return texts, TxError(f"{name}: line {number}: not valid UTF-8")
    return texts, None


# --------------------------------------------------------------------------- batching


def encode_sources(tok, texts: list[str], max_len: int) -> tuple[list[Optional[list[int]]], int]:
    """Source ids + </s> per line, None for an empty or blank line (not translated). Lines longer
    than max_len subwords are cut to max_len; returns how many were."""
    todo = [i for i, t in enumerate(texts) if t.strip()]
    rows: list[Optional[list[int]]] = [None] * len(texts)
    truncated = 0
    for i, ids in zip(todo, tok.encode_batch([texts[i] for i in todo])):
        truncated += len(ids) > max_len
        rows[i] = ids[:max_len] + [EOS_ID]
    return rows, truncated


def token_batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut so that sentences x longest <= batch_tokens
    (a single sentence over the budget still gets a batch of its own)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def pad_rows(rows: list[list[int]], pad_id: int, device) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [pad_id] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def precision_context(precision: str, device: torch.device):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_generator(run: Run, decoding: Decoding) -> Optional[torch.Generator]:
    """The random source of --sample, seeded; None when searching."""
    if not decoding.search.sample:
        return None
    return torch.Generator(device=run.device).manual_seed(decoding.seed)


def translate_rows(run: Run, rows: list[list[int]], decoding: Decoding,
                   generator: Optional[torch.Generator] = None) -> list[list[Hypothesis]]:
    """Hypotheses for source id rows (each ending in </s>), batched by the token budget, in order."""
    results: list[list[Hypothesis]] = [[] for _ in rows]
    workspace = Workspace()  # one key/value cache buffer for all the batches
    for batch in token_batches([len(r) for r in rows], decoding.batch_tokens):
        src = pad_rows([rows[i] for i in batch], run.model.cfg.pad_id, run.device)
        with precision_context(decoding.precision, run.device):
            if decoding.search.sample:
                hyps = sample(run.model, src, decoding.search, BOS_ID, EOS_ID, generator)
            else:
                hyps = beam_search(run.model, src, decoding.search, BOS_ID, EOS_ID, workspace=workspace)
        for i, h in zip(batch, hyps):
            results[i] = h
    return results


# --------------------------------------------------------------------------- the command


@dataclass
class TranslateSummary:
    lines: int = 0
    translated: int = 0  # non-blank lines
    truncated: int = 0  # lines cut to the model's maximum length
    max_len: int = 0
    output_tokens: int = 0  # best hypotheses, </s> not counted
    seconds: float = 0.0


class Formatter:
    """One output line per input line: the best translation, all n-best tab-separated, or JSON."""

    def __init__(self, run: Run, fmt: str, show_tokens: bool):
        check_choice("--format", fmt, ("text", "jsonl"))
        self.tok, self.jsonl, self.show_tokens = run.tgt_tok, fmt == "jsonl", show_tokens

    def render(self, ids: list[int]) -> str:
        if self.show_tokens:
            return " ".join(self.tok.id_to_token(i) for i in ids)
        return self.tok.decode(ids)

    def line(self, number: int, source: str, hyps: list[Hypothesis]) -> str:
        if not self.jsonl:
            return "\t".join(self.render(h.tokens) for h in hyps)
        record = {"line": number, "src": source,
                  "hyps": [{"text": self.render(h.tokens), "score": round(h.score, 4),
                            "logprob": round(h.logprob, 4), "length": len(h.tokens)} for h in hyps]}
        return json.dumps(record, ensure_ascii=False)


def translate_stream(run: Run, source: BinaryIO, sink: BinaryIO, decoding: Decoding, formatter: Formatter,
                     name: str = "<stdin>", on_chunk: Optional[Callable[[TranslateSummary], None]] = None,
                     chunk_lines: int = CHUNK_LINES) -> TranslateSummary:
    """Translate every line of `source` into `sink`, chunk by chunk, flushing after each chunk."""
    summary = TranslateSummary(max_len=run.recipe.data.max_len)
    generator = make_generator(run, decoding)
    start = time.perf_counter()

    def emit(texts: list[str]) -> None:
        rows, truncated = encode_sources(run.src_tok, texts, summary.max_len)
        todo = [i for i, r in enumerate(rows) if r is not None]
        hyps: list[list[Hypothesis]] = [[] for _ in rows]
        for i, h in zip(todo, translate_rows(run, [rows[i] for i in todo], decoding, generator)):
            hyps[i] = h
        out = [formatter.line(summary.lines + 1 + k, text, h) for k, (text, h) in enumerate(zip(texts, hyps))]
        sink.write(("\n".join(out) + "\n").encode("utf-8"))
        sink.flush()
        summary.lines += len(texts)
        summary.translated += len(todo)
        summary.truncated += truncated
        summary.output_tokens += sum(len(h[0].tokens) for h in hyps if h)
        summary.seconds = time.perf_counter() - start

    for chunk in line_chunks(source, chunk_lines):
        texts, bad_line = decode_lines(chunk, summary.lines + 1, name)
        if texts:
            emit(texts)  # the lines before a bad one still go out
        if bad_line is not None:
            raise bad_line
        if on_chunk is not None:
            on_chunk(summary)
    return summary


@contextlib.contextmanager
def open_output(path: Optional[Path], stdout: BinaryIO):
    """stdout (None or '-'), or `path` written whole or not at all."""
    if path is None or str(path) == "-":
        yield stdout
        return
    with open_atomic(path) as f:
        yield f


@contextlib.contextmanager
def open_input(path: Optional[Path], stdin: BinaryIO):
    if path is None or str(path) == "-":
        yield stdin, "<stdin>"
        return
    if not Path(path).is_file():
        raise UsageError(f"{path}: input file not found")
    with open(path, "rb") as f:
        yield f, str(path)
