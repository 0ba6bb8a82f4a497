"""What the training loop reports, as events.Event objects for the command layer: the clock of
the run (summed over its sessions), the loss and throughput of each log window, graphs compiled,
and each epoch's data statistics."""

from __future__ import annotations

import time
from typing import Callable

from . import events
from .batching import EpochStats
from .compiled import compiled_graphs
from .process import usage


class TrainReport:
    """Rank 0's reporter (on other ranks on_event drops everything, but the clock still runs)."""

    def __init__(self, on_event: Callable[[events.Event], None], compiled: bool):
        self.on_event = on_event
        self.session_start = time.monotonic()
        self.window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}
        self.graphs = compiled_graphs() if compiled else 0
        self.last_usage = usage()  # the CPU/wall of a log window covers everything the process did in it

    def start_clock(self, elapsed_before: float) -> None:
        """The clock goes on from the seconds earlier sessions of the run trained."""
        self.session_start = time.monotonic() - elapsed_before

    def elapsed(self) -> float:
        return time.monotonic() - self.session_start

    def step(self, loss_sum: float, tokens: float, seconds: float) -> None:
        w = self.window
        w["loss"] += loss_sum
        w["tokens"] += tokens
        w["seconds"] += seconds

    def log(self, step: int, epoch: int, lr: float) -> None:
        w = self.window  # loss and target tokens of the whole job (all ranks)
        now, before = usage(), self.last_usage
        cpu_per_wall = (now.cpu_s - before.cpu_s) / max(now.wall_s - before.wall_s, 1e-9)
        self.on_event(events.Log(step, epoch, round(self.elapsed(), 3), w["loss"] / max(w["tokens"], 1), lr,
                                 w["tokens"] / max(w["seconds"], 1e-9), _mb(now.rss_mb), _mb(now.peak_rss_mb),
                                 round(cpu_per_wall, 3)))
        self.last_usage = now
        self.window = {"loss": 0.0, "tokens": 0, "seconds": 0.0}

    def compiled(self, step: int, seconds: float) -> None:
        """A step that built graphs (the first, and any recompile) reports what it cost."""
        graphs = compiled_graphs()
        if graphs != self.graphs:
            self.on_event(events.Compiled(step, round(self.elapsed(), 3), graphs - self.graphs, graphs,
                                          round(seconds, 3)))
            self.graphs = graphs

    def epoch_end(self, step: int, epoch: int, s: EpochStats) -> None:
        self.on_event(events.EpochEnd(step, epoch, round(self.elapsed(), 3), s.kept, s.batches,
                                      1.0 - s.tokens / max(s.padded_tokens, 1),
                                      {name: c.to_dict() for name, c in s.counts.items()}))


def _mb(value):
    return None if value is None else round(value, 1)
