"""`tx serve` without HTTP: models, the request queue, the batcher that decodes what has arrived,
and the service's metrics (txcli/commands/http_app.py is the HTTP layer over this).

A request's lines are encoded where they arrive (the tokenizer is fast and the token count sizes
the batch) and queued as one Job. One batcher thread per model takes the jobs that have arrived,
up to `max_batch_tokens` source tokens or until the oldest has waited `max_wait_ms` (counted
from when the decoder became free, see _take) or the requests the last decode answered are back
(_ready), runs ONE
`engine.translate_rows` over all their rows (the engine sorts them by length and cuts its own
token-budget batches, as for `tx translate`), and hands every job its own lines back in order.
Decoding thus runs on that thread, never on the server's event loop, which keeps accepting.

Jobs are `concurrent.futures.Future`s: a client that goes away cancels its job, and a job
cancelled before the batcher takes it is dropped without being decoded. The queue is bounded
(`max_queue` lines per model): past it a job is refused at once (HTTP 503), so a flood costs
a refusal per request, not memory.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from collections import OrderedDict, deque
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Optional

from ..errors import TxError
from ..options import DecodeOptions
from ..translation import Hypothesis, encode_sources
from .serve_metrics import Metrics

# per-request decoding settings a client may change (/v1/translate), with their bounds: a client
# must not be able to ask for a beam of 10,000
REQUEST_OPTIONS = {"beam": (int, 1, 16), "nbest": (int, 1, 16), "alpha": (float, 0.0, 10.0),
                   "max_len_a": (float, 0.0, 10.0), "max_len_b": (int, 0, 1024), "min_len": (int, 0, 1024),
                   "no_repeat_ngram": (int, 0, 16)}
VARIANTS_KEPT = 8  # engines for per-request settings, least recently used dropped (they share the weights)


class ServeError(Exception):
    """A request the service refuses. kind: bad_request, too_large, queue_full, not_ready,
    unknown_model, shutting_down, decode_failed (the HTTP layer maps each to a status)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass
class Limits:
    max_batch_tokens: int = 8192  # source tokens (</s> counted) per decode, all requests together
    max_wait_ms: float = 5.0  # the longest the oldest queued request waits for others to join it
    max_lines: int = 256  # sentences per request
    max_queue: int = 2048  # sentences waiting per model; more is refused (503)
    max_request_bytes: int = 1 << 20


@dataclass
class Answer:
    """One request's result: hypotheses per line (none for a blank line), as translate_lines gives."""

    hyps: list[list[Hypothesis]]
    truncated: int  # lines cut to the model's maximum length


class Job:
    __slots__ = ("engine", "key", "lines", "todo", "rows", "tokens", "truncated", "arrived", "future")

    def __init__(self, engine, key, lines: int, todo: list[int], rows: list[list[int]], truncated: int):
        self.engine, self.key, self.lines, self.todo, self.rows = engine, key, lines, todo, rows
        self.tokens = sum(len(r) for r in rows)
        self.truncated = truncated
        self.arrived = time.monotonic()
        self.future: Future = Future()

    def answer(self, hyps: list[list[Hypothesis]]) -> Answer:
        out: list[list[Hypothesis]] = [[] for _ in range(self.lines)]
        for i, h in zip(self.todo, hyps):
            out[i] = h
        return Answer(out, self.truncated)


class Model:
    """A loaded engine under a name, its queue and batcher thread, and its per-request variants."""

    def __init__(self, name: str, engine, decode: DecodeOptions, limits: Limits, metrics: Metrics,
                 languages: Optional[tuple[str, str]] = None):
        self.name, self.engine, self.decode, self.limits, self.metrics = name, engine, decode, limits, metrics
        self.languages = languages
        self.variants: OrderedDict = OrderedDict()
        self.queue: deque[Job] = deque()
        self.queued_lines = 0
        self.cond = threading.Condition()
        self.closed = self.draining = False
        self.free_since = 0.0  # when the last decode ended (monotonic)
        self.answered = 0  # requests the last decode answered
        self.thread = threading.Thread(target=self._run, name=f"tx-serve-batcher-{name}", daemon=True)
        self.thread.start()

    def info(self) -> dict:
        s = self.engine.settings()
        out = {"name": self.name, "max_len": self.engine.max_len, **s}
        if self.languages:
            out["source"], out["target"] = self.languages
        return out

    def beam(self) -> int:
        return int(self.engine.settings()["beam"])

    # ------------------------------------------------------------------ requests (server threads)

    def variant(self, changes: dict):
        """The engine for these per-request settings (the model's own for none); the key batches
        requests that decode alike."""
        key = tuple(sorted(changes.items()))
        if not key:
            return self.engine, key
        with self.cond:
            engine = self.variants.get(key)
            if engine is not None:
                self.variants.move_to_end(key)
                return engine, key
        try:
            engine = self.engine.with_options(replace(self.decode, **changes))
        except TxError as err:  # lay_over's checks, named by flag: here they are fields
            raise ServeError("bad_request", str(err).replace("--", "")) from None
        with self.cond:
            self.variants[key] = engine
            while len(self.variants) > VARIANTS_KEPT:
                self.variants.popitem(last=False)
        return engine, key

    def submit(self, texts: list[str], changes: Optional[dict] = None) -> Future:
        """Queue the lines; the future gives an Answer. Refused when the queue is full or closed."""
        engine, key = self.variant(changes or {})
        rows, truncated = encode_sources(engine.src_tok, texts, engine.max_len)
        todo = [i for i, r in enumerate(rows) if r is not None]
        job = Job(engine, key, len(texts), todo, [rows[i] for i in todo], truncated)
        if not todo:  # only blank lines: nothing to decode
            job.future.set_running_or_notify_cancel()
            job.future.set_result(job.answer([]))
            self._accepted(job)
            return job.future
        with self.cond:
            if self.closed:
                raise ServeError("shutting_down", "the server is shutting down")
            if self.queued_lines + len(todo) > self.limits.max_queue:
                raise ServeError("queue_full", f"the queue of model {self.name!r} is full "
                                 f"({self.queued_lines} sentences waiting, at most {self.limits.max_queue})")
            self.queue.append(job)
            self.queued_lines += len(todo)
            self.cond.notify()
        self._accepted(job)
        return job.future

    def _accepted(self, job: Job) -> None:
        label = (("model", self.name),)
        self.metrics.inc("tx_serve_lines_total", label, job.lines)
        self.metrics.inc("tx_serve_truncated_lines_total", label, job.truncated)

    def drain(self) -> None:
        """Shutting down: what is queued goes out now, without waiting for others to join it."""
        with self.cond:
            self.draining = True
            self.cond.notify_all()

    def waiting(self) -> tuple[int, int]:
        """(requests, sentences) queued, cancelled ones included until the batcher drops them."""
        with self.cond:
            return len(self.queue), self.queued_lines

    def close(self, timeout: float = 5.0) -> None:
        """Stop the batcher: what is queued is refused (the HTTP server has drained by now)."""
        with self.cond:
            self.closed = True
            self.cond.notify_all()
        self.thread.join(timeout)

    # ------------------------------------------------------------------ the batcher thread

    def _ready(self, key, budget: int) -> bool:
        """Whether the batch need not wait: the token budget is full, or as many requests have
        arrived since the last decode ended as it answered (its clients are back: in a closed
        loop no one else is coming, and waiting longer only idles the decoder)."""
        tokens = returned = 0
        for job in self.queue:
            if job.key == key and not job.future.cancelled():
                tokens += job.tokens
                returned += job.arrived >= self.free_since
                if tokens >= budget or returned >= self.answered > 0:
                    return True
        return False

    def _take(self) -> Optional[list[Job]]:
        """The next batch: the oldest job and those after it that decode alike, within the token
        budget, once the budget is full, the oldest has waited max_wait_ms, or the last decode's
        requests are back (_ready). None: closed."""
        budget, wait = self.limits.max_batch_tokens, self.limits.max_wait_ms / 1000
        with self.cond:
            while True:
                while self.queue and self.queue[0].future.cancelled():  # its client went away
                    self.queued_lines -= len(self.queue.popleft().todo)
                if self.closed:
                    return None
                if not self.queue:
                    self.cond.wait()
                    continue
                first = self.queue[0]
                # counted from when the decoder became free, not from the oldest arrival: after a
                # batch, its clients send their next requests within milliseconds, and waiting
                # for them merges them with those that queued during the decode. Else two halves
                # of the clients take turns, each in batches half as big.
                left = max(first.arrived, self.free_since) + wait - time.monotonic()
                if left > 0 and not self.draining and not self._ready(first.key, budget):
                    self.cond.wait(left)  # woken by each new job: the budget may be full now
                    continue
                break
            batch, tokens, kept = [], 0, deque()
            for job in self.queue:
                fits = not batch or tokens + job.tokens <= budget
                if job.key == first.key and fits and not (batch and tokens >= budget):
                    self.queued_lines -= len(job.todo)
                    if job.future.set_running_or_notify_cancel():  # False: cancelled, dropped
                        batch.append(job)
                        tokens += job.tokens
                    continue
                kept.append(job)
            self.queue = kept
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                break
            if batch:
                self._decode(batch)
        with self.cond:  # closed: whatever is still queued is refused
            for job in self.queue:
                if job.future.set_running_or_notify_cancel():
                    job.future.set_exception(ServeError("shutting_down", "the server is shutting down"))
            self.queue.clear()
            self.queued_lines = 0

    def _free(self, answered: int) -> None:
        """The decoder is free: noted before the answers go out, so that a request sent back
        at once counts as come back (see _ready)."""
        with self.cond:
            self.free_since, self.answered = time.monotonic(), answered

    def _decode(self, batch: list[Job]) -> None:
        m, label = self.metrics, (("model", self.name),)
        start, cpu = time.monotonic(), time.thread_time()
        for job in batch:
            m.observe("tx_serve_queue_wait_seconds", start - job.arrived)
        rows = [r for job in batch for r in job.rows]
        try:
            hyps = batch[0].engine.translate_rows(rows)
        except Exception as err:  # a bug or an engine failure: the requests fail, the server goes on
            self._free(len(batch))
            traceback.print_exc(file=sys.stderr)
            for job in batch:
                job.future.set_exception(ServeError("decode_failed", f"decoding failed ({type(err).__name__}); "
                                                    "see the server's log"))
            return
        m.observe("tx_serve_decode_seconds", time.monotonic() - start)
        m.inc("tx_serve_decode_cpu_seconds_total", label, time.thread_time() - cpu)
        m.observe("tx_serve_batch_requests", len(batch))
        m.observe("tx_serve_batch_sentences", len(rows))
        m.inc("tx_serve_batches_total", label)
        m.inc("tx_serve_source_tokens_total", label, sum(job.tokens for job in batch))
        m.inc("tx_serve_target_tokens_total", label, sum(len(h[0].tokens) for h in hyps if h))
        self._free(len(batch))
        at = 0
        for job in batch:
            job.future.set_result(job.answer(hyps[at:at + len(job.rows)]))
            at += len(job.rows)


class Service:
    """Every model of one `tx serve`, the limits and metrics they share, and whether it is ready."""

    def __init__(self, limits: Limits, metrics: Optional[Metrics] = None):
        self.limits, self.metrics = limits, metrics or Metrics()
        self.models: dict[str, Model] = {}
        self.ready = False
        self.metrics.gauge("tx_serve_ready", lambda: float(self.ready))
        self.metrics.gauge("tx_serve_queue_requests", lambda: float(sum(m.waiting()[0] for m in self.models.values())))
        self.metrics.gauge("tx_serve_queue_sentences", lambda: float(sum(m.waiting()[1] for m in self.models.values())))

    def add(self, name: str, engine, decode: DecodeOptions, languages: Optional[tuple[str, str]] = None) -> Model:
        model = Model(name, engine, decode, self.limits, self.metrics, languages)
        self.models[name] = model
        return model

    def pick(self, name: Optional[str], source: Optional[str] = None, target: Optional[str] = None) -> Model:
        """The model by name; else by language pair where models declare one (source 'auto' or
        none: by target alone); else the first."""
        if not self.ready:
            raise ServeError("not_ready", "the model is still loading")
        if name is not None:
            if name not in self.models:
                raise ServeError("unknown_model", f"model: no model named {name!r} "
                                 f"(there are: {', '.join(self.models)})")
            return self.models[name]
        declared = [m for m in self.models.values() if m.languages]
        if declared and target:
            for m in declared:
                if m.languages[1] == target and source in (None, "", "auto", m.languages[0]):
                    return m
            raise ServeError("bad_request", f"source/target: no model translates {source or 'auto'} to {target}")
        return next(iter(self.models.values()))

    def drain(self) -> None:
        for model in self.models.values():
            model.drain()

    def close(self, timeout: float = 5.0) -> None:
        self.ready = False
        for model in self.models.values():
            model.close(timeout)


def hypothesis_records(tok, texts: list[str], answer: Answer, scores: bool) -> list[dict]:
    """Per line, the fields of `tx translate --format jsonl` (scores rounded alike); without
    scores only each hypothesis's text."""
    out = []
    for number, (text, hyps) in enumerate(zip(texts, answer.hyps), 1):
        items = [{"text": tok.decode(h.tokens), "score": round(h.score, 4), "logprob": round(h.logprob, 4),
                  "length": len(h.tokens)} if scores else {"text": tok.decode(h.tokens)} for h in hyps]
        out.append({"line": number, "src": text, "hyps": items})
    return out


def truncation_note(count: int, max_len: int) -> Optional[str]:
    """What `tx translate` warns, for a response (views.truncation_warning's wording)."""
    if not count:
        return None
    return f"{count} lines longer than the model's maximum of {max_len} subword tokens were truncated"
