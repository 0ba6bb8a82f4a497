"""What `tx train` reports as it goes: one dataclass per kind of event, defined once and read by
the run log (metrics.jsonl, train.log), the progress display and the tests.

`to_dict()` is the metrics.jsonl record ({"event": kind, ...fields}); `describe()` the train.log
line. Plain values only: no torch, no terminal.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Optional

SCORE_KEYS = ("loss", "ppl", "bleu", "chrf")  # what a validation measures
HIGHER_IS_BETTER = {"bleu": True, "chrf": True, "loss": False, "ppl": False}


def clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}:{s:02d}"


@dataclass
class Event:
    kind: ClassVar[str] = ""
    in_metrics: ClassVar[bool] = True  # written to metrics.jsonl (else train.log and the display only)

    def to_dict(self) -> dict:
        return {"event": self.kind, **asdict(self)}

    def describe(self) -> str:
        return json.dumps(self.to_dict())


@dataclass
class Setup(Event):
    kind: ClassVar[str] = "setup"
    in_metrics: ClassVar[bool] = False
    params: int
    max_steps: int
    max_minutes: Optional[float]
    resumed: bool
    valid_pairs: int
    target: Optional[str] = None  # train.stop_at, e.g. "bleu >= 90"
    compiled: bool = False

    def describe(self) -> str:
        limit = f", at most {self.max_minutes:g} min" if self.max_minutes else ""
        target = f", or until valid {self.target}" if self.target else ""
        how = " (torch.compile: the first step compiles)" if self.compiled else ""
        return (f"model: {self.params:,} parameters; up to {self.max_steps} steps{limit}{target}; "
                f"{self.valid_pairs} validation pairs{how}")


@dataclass
class InitFrom(Event):
    """The run started from another run's weights (train.init_from)."""

    kind: ClassVar[str] = "init"
    step: int  # where this run's count starts: 0, or the source's step (init_reset optimizer/none)
    source: str  # the weights file
    reset: str  # train.init_reset

    def describe(self) -> str:
        kept = {"all": "weights only", "optimizer": "weights and step count",
                "none": "weights, step count and optimizer state"}[self.reset]
        return f"initialised from {self.source} ({kept}; step {self.step})"


@dataclass
class Start(Event):
    kind: ClassVar[str] = "start"
    step: int
    epoch: int
    elapsed: float
    world_size: int
    device: str
    precision: str

    def describe(self) -> str:
        return (f"{'resumed' if self.step else 'started'} at step {self.step} on {self.device} "
                f"({self.precision}, {self.world_size} process(es))")


@dataclass
class Log(Event):
    """Training loss per target token, learning rate and speed over the steps since the last log."""

    kind: ClassVar[str] = "log"
    step: int
    epoch: int
    elapsed: float
    loss: float
    lr: float
    tokens_per_s: float
    rss_mb: Optional[float] = None       # this process's resident memory at the log line
    peak_rss_mb: Optional[float] = None  # its peak so far
    cpu_per_wall: Optional[float] = None  # CPU seconds (all threads) per wall second since the last log

    def describe(self) -> str:
        usage = ""
        if self.rss_mb is not None:
            usage += f"  rss {self.rss_mb:,.0f} MB (peak {self.peak_rss_mb or 0:,.0f})"
        if self.cpu_per_wall is not None:
            usage += f"  cpu/wall {self.cpu_per_wall:.2f}"
        return (f"step {self.step:>6}  epoch {self.epoch:>3}  loss {self.loss:.4f}  lr {self.lr:.2e}  "
                f"{self.tokens_per_s:,.0f} tok/s{usage}  {clock(self.elapsed)}")


@dataclass
class Compiled(Event):
    """torch.compile built graphs during a step: the first step's, or a recompile (a new shape
    or dtype the graphs were not general enough for)."""

    kind: ClassVar[str] = "compile"
    step: int
    elapsed: float
    new_graphs: int
    graphs: int          # built so far in this process: more than the first step's means recompiles
    step_seconds: float  # the step's wall time, compiling included

    def describe(self) -> str:
        return (f"compiled {self.new_graphs} graph(s) in step {self.step} ({self.step_seconds:.1f} s with the step; "
                f"{self.graphs} in all)")


@dataclass
class EpochEnd(Event):
    kind: ClassVar[str] = "epoch"
    step: int
    epoch: int
    elapsed: float
    pairs: int  # pairs trained on (kept by the filters), all corpora
    batches: int
    padding: float  # share of padded tokens in the epoch's batches
    corpora: dict = field(default_factory=dict)  # name -> {"read", "kept", "dropped": {filter: n}}

    def describe(self) -> str:
        parts = []
        for name, c in self.corpora.items():
            dropped = ", ".join(f"{f} {n}" for f, n in c.get("dropped", {}).items())
            parts.append(f"{name}: {c.get('kept', 0)} of {c.get('read', 0)} kept" + (f" (dropped: {dropped})" if dropped else ""))
        return (f"epoch {self.epoch} done at step {self.step}: {self.pairs} pairs in {self.batches} batches, "
                f"padding {100 * self.padding:.1f}%" + (f"; {'; '.join(parts)}" if parts else ""))


@dataclass
class Validation(Event):
    kind: ClassVar[str] = "valid"
    step: int
    epoch: int
    elapsed: float
    loss: float
    ppl: float
    bleu: float
    chrf: float
    best: bool  # the best so far by the early-stopping metric: saved as model.safetensors
    weights: str = "model"  # which were scored: the trained weights, or their moving average (train.ema)

    def scores(self) -> dict:
        return {k: getattr(self, k) for k in SCORE_KEYS}

    def describe(self) -> str:
        return (f"valid{' ema' if self.weights == 'ema' else ''} step {self.step:>6}  loss {self.loss:.4f}  ppl {self.ppl:.2f}  BLEU {self.bleu:.2f}  "
                f"chrF {self.chrf:.2f}{'  (best)' if self.best else ''}  {clock(self.elapsed)}")


@dataclass
class CheckpointSaved(Event):
    kind: ClassVar[str] = "checkpoint"
    in_metrics: ClassVar[bool] = False
    step: int
    elapsed: float
    path: str

    def describe(self) -> str:
        return f"checkpoint saved: {self.path} (step {self.step})"


@dataclass
class End(Event):
    kind: ClassVar[str] = "end"
    step: int
    epoch: int
    elapsed: float
    reason: str  # max_steps | max_minutes | target | early_stop | interrupted | nan
    metric: str
    best_step: int
    best_score: Optional[float]

    def describe(self) -> str:
        best = (f"best {self.metric} {self.best_score:.2f} at step {self.best_step}"
                if self.best_score is not None else "no validation")
        return f"stopped at step {self.step} ({self.reason}); {best}; {clock(self.elapsed)}"


@dataclass
class Failure(Event):
    kind: ClassVar[str] = "error"
    step: int
    message: str

    def describe(self) -> str:
        return self.message


@dataclass
class Notice(Event):
    """Something the user should know: a warning, or what is being done (training the tokenizer)."""

    kind: ClassVar[str] = "warning"
    in_metrics: ClassVar[bool] = False
    message: str

    def describe(self) -> str:
        return self.message


@dataclass
class TokenizerTraining(Notice):
    kind: ClassVar[str] = "tokenizer"
