"""Pictures as PNG bytes (matplotlib's Agg canvas, no pyplot state): attention heatmaps, the
positional encodings, and `png_bytes`, which every picture of tx goes through (curves.py too).
"""

from __future__ import annotations

import io
import math

import numpy as np

from .tokenizer import METASPACE


def png_bytes(fig) -> bytes:
    """The figure as PNG, without matplotlib's "Software" text (a URL) in the file: pictures are
    embedded in self-contained pages that carry no URL."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _label_font(n: int) -> float:
    return 9.0 if n <= 25 else 7.0 if n <= 45 else 6.0


def _display(tokens: list[str]) -> list[str]:
    """Tick labels: the word-start marker U+2581 as '_' (fonts draw the block glyph as a bar)."""
    return [t.replace(METASPACE, "_") for t in tokens]


def _label_inches(tokens: list[str], font: float) -> float:
    """Room for the longest tick label (average glyph ~0.6 em) plus the tick itself."""
    return 0.6 * font / 72 * max((len(t) for t in tokens), default=1) + 0.15


def plot_heads(weights: np.ndarray, heads: list[int], rows: list[str], cols: list[str], title: str,
               axis_labels: tuple[str, str] = ("query", "key"), dpi: int = 120) -> bytes:
    """PNG of one kind and layer: one heatmap per head in a grid (at most 4 across), tokens on both
    axes. Panels grow ~0.11 inch a token, so 60 subwords stay readable; axes are placed by hand
    (in inches) rather than by a layout engine, which would cost more than the drawing."""
    from matplotlib.figure import Figure

    n_heads = weights.shape[0]
    ncols = min(n_heads, 4)
    nrows = math.ceil(n_heads / ncols)
    font = _label_font(max(len(rows), len(cols)))
    rows, cols = _display(rows), _display(cols)
    panel_w, panel_h = max(2.0, 0.11 * len(cols)), max(2.0, 0.11 * len(rows))
    left, bottom = _label_inches(rows, font) + 0.35, _label_inches(cols, font) + 0.35  # + axis label
    gap, title_h, top, right = 0.25, 0.3, 0.45, 0.9
    width = left + ncols * panel_w + (ncols - 1) * gap + right
    height = bottom + nrows * (panel_h + title_h) + top
    fig = Figure(figsize=(width, height), dpi=dpi)
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    fig.text(0.08 / width, (bottom + nrows * (panel_h + title_h) / 2) / height, axis_labels[0],
             rotation=90, va="center", fontsize=9)
    fig.text((left + (width - left - right) / 2) / width, 0.08 / height, axis_labels[1], ha="center", fontsize=9)
    image = None
    for k in range(n_heads):
        r, c = divmod(k, ncols)
        x0 = left + c * (panel_w + gap)
        y0 = bottom + (nrows - 1 - r) * (panel_h + title_h)
        ax = fig.add_axes((x0 / width, y0 / height, panel_w / width, panel_h / height))
        image = ax.imshow(weights[k], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto", interpolation="nearest")
        ax.set_title(f"head {heads[k]}", fontsize=10, pad=3)
        label_x = k + ncols >= n_heads  # no panel below this one
        ax.set_xticks(range(len(cols)), cols if label_x else [], rotation=90, fontsize=font)
        ax.set_yticks(range(len(rows)), rows if c == 0 else [], fontsize=font)
    cax = fig.add_axes(((width - right + 0.2) / width, bottom / height, 0.15 / width,
                        (nrows * (panel_h + title_h) - title_h) / height))
    fig.colorbar(image, cax=cax)
    return png_bytes(fig)


def plot_matrix(matrix: np.ndarray, title: str, xlabel: str, ylabel: str, dpi: int = 100) -> bytes:
    """PNG heatmap of one matrix with a diverging colour map (e.g. the positional encodings)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 6), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1.0, vmax=1.0, aspect="auto", interpolation="nearest")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(image, ax=ax)
    return png_bytes(fig)


def positional_encoding_png(positions: int, d_model: int) -> bytes:
    """Heatmap of the sinusoidal positional-encoding matrix a model of width d_model adds to its
    embeddings (rows: positions; columns: dimensions)."""
    from .model import sinusoidal_positions

    pe = sinusoidal_positions(positions, d_model).numpy()
    return plot_matrix(pe, f"positional encoding: {positions} positions x d_model {d_model}", "dimension", "position")
