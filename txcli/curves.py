"""Training curves from a run's metrics.jsonl, as PNG bytes (matplotlib Agg, no pyplot state).

`curve_pngs` gives one PNG per quantity: training loss and learning rate against steps;
validation loss, BLEU and chrF against steps and, in a second panel, against minutes of training.
`overview_png` puts them all in one small figure, for the explorer page.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from .plots import png_bytes

# (file name, event, key, title); validation curves get a second panel against minutes
CURVES = (
    ("train-loss.png", "log", "loss", "training loss"),
    ("lr.png", "log", "lr", "learning rate"),
    ("valid-loss.png", "valid", "loss", "validation loss"),
    ("valid-bleu.png", "valid", "bleu", "validation BLEU"),
    ("valid-chrf.png", "valid", "chrf", "validation chrF"),
)


def read_events(path: Path) -> list[dict]:
    """The readable lines of metrics.jsonl (a line half written by a run in progress is skipped)."""
    events = []
    with open(path, "rb") as f:
        for raw in f:
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _num(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def series(events: list[dict], event: str, key: str, weights: str = "model") -> tuple[list[float], list[float], list[float]]:
    """(steps, minutes, values) of one quantity; minutes are NaN where `elapsed` is missing.
    weights: validations of the trained weights ("model") or of their moving average ("ema")."""
    steps, minutes, values = [], [], []
    for e in events:
        if (e.get("event") == event and _num(e.get(key)) and _num(e.get("step"))
                and e.get("weights", "model") == weights):
            steps.append(float(e["step"]))
            minutes.append(float(e["elapsed"]) / 60 if _num(e.get("elapsed")) else float("nan"))
            values.append(float(e[key]))
    return steps, minutes, values


def _draw(ax, x, y, xlabel: str, title: str, log: bool = False) -> None:
    ax.plot(x, y, marker="." if len(x) < 40 else None, linewidth=1.2)
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if log and y and min(y) > 0:
        ax.set_yscale("log")


def curve_pngs(path: Path, dpi: int = 100) -> dict[str, bytes]:
    """File name -> PNG for each quantity metrics.jsonl has at least one point of."""
    from matplotlib.figure import Figure

    events = read_events(path)
    out = {}
    for name, event, key, title in CURVES:
        steps, minutes, values = series(events, event, key)
        if not values:
            continue
        if event == "valid":
            fig = Figure(figsize=(9, 3.4), dpi=dpi, layout="constrained")
            a, b = fig.subplots(1, 2)
            _draw(a, steps, values, "step", f"{title} by step")
            _draw(b, minutes, values, "minutes", f"{title} by time")
            ema = series(events, event, key, "ema")
            if ema[2]:  # train.ema: the average's curve beside the trained weights'
                _draw(a, ema[0], ema[2], "step", f"{title} by step")
                _draw(b, ema[1], ema[2], "minutes", f"{title} by time")
                a.legend(["model", "ema"], fontsize=8)
        else:
            fig = Figure(figsize=(5, 3.4), dpi=dpi, layout="constrained")
            _draw(fig.subplots(), steps, values, "step", title, log=key == "loss")
        out[name] = png_bytes(fig)
    return out


def overview_png(path: Path, dpi: int = 60) -> Optional[bytes]:
    """Every curve in one figure (validation ones by step), or None without metrics."""
    from matplotlib.figure import Figure

    if not Path(path).is_file():
        return None
    events = read_events(path)
    drawn = [(title, series(events, event, key), key) for _, event, key, title in CURVES]
    drawn = [d for d in drawn if d[1][2]]
    if not drawn:
        return None
    fig = Figure(figsize=(3.2 * len(drawn), 2.6), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, len(drawn), squeeze=False)[0]
    for ax, (title, (steps, _, values), key) in zip(axes, drawn):
        _draw(ax, steps, values, "step", title, log=key == "loss")
    return png_bytes(fig)
