"""The counters and histograms of `tx serve`, written in Prometheus' text format (version 0.0.4).

Small enough to keep without a client library: counters by label set, histograms with fixed
buckets, gauges read when scraped. Every update takes one lock (a few per request and batch).
"""

from __future__ import annotations

import math
import threading
from typing import Callable

Labels = tuple  # ((name, value), ...)

SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

# name -> (type, help, buckets for a histogram)
KNOWN = {
    "tx_serve_requests_total": ("counter", "HTTP requests answered, by endpoint and status", None),
    "tx_serve_errors_total": ("counter", "Requests refused or failed, by kind", None),
    "tx_serve_lines_total": ("counter", "Sentences accepted into the queue, by model", None),
    "tx_serve_truncated_lines_total": ("counter", "Sentences cut to the model's maximum length", None),
    "tx_serve_batches_total": ("counter", "Batched decodes run, by model", None),
    "tx_serve_source_tokens_total": ("counter", "Source subword tokens decoded (</s> counted)", None),
    "tx_serve_target_tokens_total": ("counter", "Target subword tokens of the best hypotheses", None),
    "tx_serve_decode_cpu_seconds_total": ("counter", "CPU time of the decoding thread in its batched decodes "
                                          "(torch's own worker threads not counted)", None),
    "tx_serve_batch_requests": ("histogram", "Requests per batched decode", COUNTS),
    "tx_serve_batch_sentences": ("histogram", "Sentences per batched decode", COUNTS),
    "tx_serve_queue_wait_seconds": ("histogram", "Time from arrival to the start of its decode", SECONDS),
    "tx_serve_decode_seconds": ("histogram", "Time of one batched decode", SECONDS),
    "tx_serve_ready": ("gauge", "1 once every model is loaded", None),
    "tx_serve_queue_requests": ("gauge", "Requests waiting to be decoded", None),
    "tx_serve_queue_sentences": ("gauge", "Sentences waiting to be decoded", None),
}


class Histogram:
    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds):
        self.bounds, self.counts, self.sum, self.count = bounds, [0] * len(bounds), 0.0, 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        self.sum += value
        self.count += 1


class Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.counters: dict[tuple[str, Labels], float] = {}
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], float]] = {}

    def inc(self, name: str, labels: Labels = (), by: float = 1) -> None:
        with self.lock:
            self.counters[name, labels] = self.counters.get((name, labels), 0) + by

    def observe(self, name: str, value: float) -> None:
        with self.lock:
            hist = self.histograms.get(name)
            if hist is None:
                hist = self.histograms[name] = Histogram(KNOWN[name][2])
            hist.observe(value)

    def gauge(self, name: str, read: Callable[[], float]) -> None:
        self.gauges[name] = read

    def value(self, name: str, labels: Labels = ()) -> float:
        with self.lock:
            return self.counters.get((name, labels), 0)

    def total(self, name: str) -> float:
        """A counter summed over its label sets."""
        with self.lock:
            return sum(v for (n, _), v in self.counters.items() if n == name)

    def render(self) -> str:
        """Every known metric (a histogram not yet observed shows zeros), HELP and TYPE first."""
        with self.lock:
            counters = dict(self.counters)
            hists = {k: (list(h.counts), h.sum, h.count) for k, h in self.histograms.items()}
        lines = []
        for name, (kind, help_text, bounds) in KNOWN.items():
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
            if kind == "counter":
                lines += [f"{name}{_labels(labels)} {_number(v)}" for (n, labels), v in sorted(counters.items())
                          if n == name]
            elif kind == "gauge":
                read = self.gauges.get(name)
                lines.append(f"{name} {_number(read() if read else 0.0)}")
            else:
                counts, total, count = hists.get(name, ([0] * len(bounds), 0.0, 0))
                running = 0
                for bound, c in zip(bounds, counts):
                    running += c
                    lines.append(f'{name}_bucket{{le="{_number(bound)}"}} {running}')
                lines += [f'{name}_bucket{{le="+Inf"}} {count}', f"{name}_sum {_number(total)}",
                          f"{name}_count {count}"]
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels) + "}"


def _escape(value: str) -> str:
    """A label value as the text format wants it: backslash, double quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if isinstance(value, float) and math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) and not float(value).is_integer() else str(int(value))
