"""Lines in and out for the commands that read text streams (translate, score, evaluate,
attention-dump): chunks of lines, UTF-8 decoding that names the bad line, and opening inputs and
outputs where '-' means stdin/stdout and a named output file appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from .atomic import open_atomic
from .errors import TxError, UsageError

CHUNK_LINES = 4096  # lines read, translated and written at a time: bounds memory, not the input
INPUT_ERRORS = ("strict", "replace")


@dataclass
class ReplacedLines:
    """--input-errors replace: undecodable bytes become U+FFFD and the line goes on, so N lines in
    still give N lines out; the lines this happened to are counted per input, for one warning."""

    counts: dict[str, int] = field(default_factory=dict)

    def decode(self, raw: bytes, name: str) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.counts[name] = self.counts.get(name, 0) + 1
            return raw.decode("utf-8", errors="replace")

    def warning(self) -> Optional[str]:
        if not self.counts:
            return None
        each = ", ".join(f"{n} line{'s' * (n != 1)} of {name}" for name, n in self.counts.items())
        return f"not valid UTF-8, undecodable bytes replaced by U+FFFD: {each}"


def input_errors(mode: str) -> Optional[ReplacedLines]:
    """--input-errors checked: None for strict (a bad line is an error naming it), else the counter."""
    if mode not in INPUT_ERRORS:
        raise UsageError(f"--input-errors {mode!r}: expected one of {', '.join(INPUT_ERRORS)}")
    return ReplacedLines() if mode == "replace" else None


def line_chunks(stream: BinaryIO, max_lines: int = CHUNK_LINES) -> Iterator[list[bytes]]:
    """Lines (without the newline) in chunks of at most max_lines. A last line without a newline
    still counts. On a pipe or terminal a chunk ends early when no more input is waiting, so a
    line typed in is answered at once."""
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


def decode_lines(chunk: list[bytes], first_number: int, name: str,
                 replaced: Optional[ReplacedLines] = None) -> tuple[list[str], Optional[TxError]]:
    """UTF-8 text of the lines up to the first bad one, and the error naming that line (or None);
    with `replaced`, every line, bad bytes replaced."""
    if replaced is not None:
        return [replaced.decode(raw, name).rstrip("\r") for raw in chunk], None
    texts = []
    for number, raw in enumerate(chunk, start=first_number):
        try:
            texts.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError:
            return texts, TxError(f"{name}: line {number}: not valid UTF-8")
    return texts, None


def numbered_lines(path: Path | str, stdin: Optional[BinaryIO] = None,
                   replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[int, str]]:
    """(1-based line number, text without the line end) of a file, or of stdin for '-'.
    Invalid UTF-8 names the file and line (with `replaced`: is replaced and counted)."""
    if str(path) == "-":
        yield from numbered_stream(stdin, "<stdin>", replaced)
        return
    if not Path(path).is_file():
        raise UsageError(f"{path}: file not found")
    with open(path, "rb") as f:
        yield from numbered_stream(f, str(path), replaced)


def numbered_stream(stream: Iterable[bytes], name: str,
                    replaced: Optional[ReplacedLines] = None) -> Iterator[tuple[int, str]]:
    """numbered_lines over an open binary stream (a decompressing one too), named `name` in errors."""
    for number, raw in enumerate(stream, start=1):
        if replaced is not None:
            yield number, replaced.decode(raw, name).rstrip("\r\n")
            continue
        try:
            yield number, raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            raise UsageError(f"{name}: line {number}: not valid UTF-8") from None


def chunks(items: Iterable, size: int = CHUNK_LINES) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


@contextlib.contextmanager
def open_input(path: Optional[Path], stdin: BinaryIO):
    """(binary stream, name for messages): stdin for None or '-', else the file."""
    if path is None or str(path) == "-":
        yield stdin, "<stdin>"
        return
    if not Path(path).is_file():
        raise UsageError(f"{path}: input file not found")
    with open(path, "rb") as f:
        yield f, str(path)


@contextlib.contextmanager
def open_output(path: Optional[Path], stdout: Optional[BinaryIO]):
    """A binary stream: stdout for None or '-', else a file that appears whole or not at all, so
    an interrupted run never leaves half a file behind."""
    if path is None or str(path) == "-":
        yield stdout
        if stdout is not None:
            stdout.flush()
        return
    with open_atomic(path) as f:
        yield f
