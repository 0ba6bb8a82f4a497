"""`tx translate`: lines in, one translation per line out, in input order.

Input is read in chunks of at most CHUNK_LINES lines (on a pipe or a terminal a chunk also ends
when no more input is waiting, so a line typed in is answered at once). Inside a chunk sentences
are sorted by length and cut into batches of at most `batch_tokens` padded source tokens; the
translations go out in input order when the chunk is done. Memory is bounded by the chunk, not
by the input.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from ..options import check_choice
from ..streams import CHUNK_LINES, ReplacedLines, decode_lines, input_errors, line_chunks, open_input, open_output
from ..translation import Hypothesis, translate_lines

# torch-free: with --engine ctranslate2 nothing on this path imports torch (tests/test_engines.py)

# --------------------------------------------------------------------------- the command


@dataclass
class TranslateSummary:
    lines: int = 0
    translated: int = 0  # non-blank lines
    truncated: int = 0  # lines cut to the model's maximum length
    max_len: int = 0
    output_tokens: int = 0  # best hypotheses, </s> not counted
    seconds: float = 0.0
    warning: Optional[str] = None  # lines whose invalid UTF-8 was replaced


class Formatter:
    """One output line per input line: the best translation, all n-best tab-separated, or JSON."""

    def __init__(self, engine, fmt: str, show_tokens: bool):
        """engine: anything with the target tokenizer as tgt_tok (an engine, a Run)."""
        check_choice("--format", fmt, ("text", "jsonl"))
        self.tok, self.jsonl, self.show_tokens = engine.tgt_tok, fmt == "jsonl", show_tokens

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


def translate_files(engine, input: Optional[Path], output: Optional[Path], stdin: BinaryIO, stdout: BinaryIO,
                    formatter: Formatter, errors: str = "strict") -> TranslateSummary:
    """The command: --input (default stdin) to --output (default stdout, else written whole or
    not at all). errors: strict (invalid UTF-8 stops at that line, naming it) or replace."""
    replaced = input_errors(errors)
    with open_input(input, stdin) as (source, name), open_output(output, stdout) as sink:
        summary = translate_stream(engine, source, sink, formatter, name, replaced=replaced)
    summary.warning = replaced and replaced.warning()
    return summary


def translate_stream(engine, source: BinaryIO, sink: BinaryIO, formatter: Formatter,
                     name: str = "<stdin>", on_chunk: Optional[Callable[[TranslateSummary], None]] = None,
                     chunk_lines: int = CHUNK_LINES, replaced: Optional[ReplacedLines] = None) -> TranslateSummary:
    """Translate every line of `source` into `sink` with an engine (txcli.engines), chunk by chunk,
    flushing after each chunk."""
    summary = TranslateSummary(max_len=engine.max_len)
    start = time.perf_counter()

    def emit(texts: list[str]) -> None:
        hyps, truncated = translate_lines(engine, texts, summary.max_len)
        out = [formatter.line(summary.lines + 1 + k, text, h) for k, (text, h) in enumerate(zip(texts, hyps))]
        sink.write(("\n".join(out) + "\n").encode("utf-8"))
        sink.flush()
        summary.lines += len(texts)
        summary.translated += sum(1 for t in texts if t.strip())
        summary.truncated += truncated
        summary.output_tokens += sum(len(h[0].tokens) for h in hyps if h)
        summary.seconds = time.perf_counter() - start

    for chunk in line_chunks(source, chunk_lines):
        texts, bad_line = decode_lines(chunk, summary.lines + 1, name, replaced)
        if texts:
            emit(texts)  # the lines before a bad one still go out
        if bad_line is not None:
            raise bad_line
        if on_chunk is not None:
            on_chunk(summary)
    return summary
