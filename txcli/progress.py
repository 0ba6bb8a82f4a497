"""Showing `tx train` progress: a rich live panel on a terminal, plain lines otherwise.

Part of the CLI layer: it only renders the events (txcli.events) the training loop reports.
"""

from __future__ import annotations

import os
import time
from typing import Optional

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import events


class PlainProgress:
    """One line per event on stderr: for CI logs, pipes and files."""

    def __init__(self, console: Console):
        self.console = console

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def event(self, e: events.Event) -> None:
        if isinstance(e, events.CheckpointSaved):
            return
        self.console.print(e.describe(), markup=False, highlight=False)


class LiveProgress(PlainProgress):
    """A panel redrawn in place (step, epoch, loss, lr, tokens/s, validation, ETA); validation
    results and notices scroll above it."""

    def __init__(self, console: Console):
        super().__init__(console)
        self.live = Live(console=console, refresh_per_second=4, transient=False)
        self.setup: Optional[events.Setup] = None
        self.last_log: Optional[events.Log] = None
        self.last_valid: Optional[events.Validation] = None
        self.best: Optional[events.Validation] = None
        self.status = "starting"
        self.started = time.monotonic()

    def __enter__(self):
        self.live.__enter__()
        self.live.update(self._render())
        return self

    def __exit__(self, *exc):
        self.live.update(self._render())
        return self.live.__exit__(*exc)

    def event(self, e: events.Event) -> None:
        if isinstance(e, events.Setup):
            self.setup = e
        elif isinstance(e, events.Log):
            self.last_log = e
            self.status = "training"
        elif isinstance(e, events.Validation) and e.weights == "model":  # train.log has the EMA's too
            self.last_valid = e
            if e.best:
                self.best = e
            self.live.console.print(e.describe(), markup=False, highlight=False)
        elif not isinstance(e, events.CheckpointSaved):
            if isinstance(e, (events.Start, events.End)):
                self.status = "training" if isinstance(e, events.Start) else "finished"
            self.live.console.print(e.describe(), markup=False, highlight=False)
        self.live.update(self._render())

    def _render(self):
        log = self.last_log
        step = log.step if log else 0
        max_steps = (self.setup.max_steps if self.setup else 0) or 1
        table = Table.grid(padding=(0, 2))
        for _ in range(4):
            table.add_column()
        table.add_row("step", f"{step} / {max_steps}", "epoch", str(log.epoch) if log else "-")
        table.add_row("loss", _fmt(log and log.loss, ".4f"), "lr", _fmt(log and log.lr, ".2e"))
        table.add_row("tokens/s", _fmt(log and log.tokens_per_s, ",.0f"), "elapsed / ETA",
                      f"{_clock(log and log.elapsed)} / {_clock(self._eta(log))}")
        if self.last_valid:
            v, b = self.last_valid, self.best or self.last_valid
            table.add_row("valid BLEU", f"{v.bleu:.2f} (best {b.bleu:.2f} @ {b.step})",
                          "chrF / ppl", f"{v.chrf:.2f} / {v.ppl:.2f}")
        header = Table.grid(padding=(0, 2))
        header.add_row(Text(f"tx train: {self.status}", style="bold"),
                       ProgressBar(total=max_steps, completed=step, width=40), f"{100 * step / max_steps:.0f}%")
        return Group(header, table)

    def _eta(self, log: Optional[events.Log]) -> Optional[float]:
        """Seconds left: whichever comes first of max_steps at the current pace and max_minutes."""
        if log is None or not log.step or not log.elapsed:
            return None
        max_steps = self.setup.max_steps if self.setup else log.step
        left = (max_steps - log.step) * log.elapsed / log.step  # elapsed spans resumes too
        if self.setup and self.setup.max_minutes:
            left = min(left, max(0.0, self.setup.max_minutes * 60 - log.elapsed))
        return left


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _clock(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class NoProgress(PlainProgress):
    """For the ranks other than 0 of a torchrun job: rank 0 speaks for all."""

    def event(self, e: events.Event) -> None:
        pass


def train_progress(console: Console) -> PlainProgress:
    if os.environ.get("RANK", "0") != "0":
        return NoProgress(console)
    return LiveProgress(console) if console.is_terminal else PlainProgress(console)
