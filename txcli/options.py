"""Decoding options without torch: what both engines (torch and CTranslate2) accept, so that
`tx translate --engine ctranslate2` starts without importing torch.

The command-line options, the precisions decoding runs in, and `lay_over`: the options laid over
a recipe's `decode` section and checked, the one place their rules live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .errors import UsageError


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


# the smallest value each option takes, and the flag that names it in messages
_LOWER_BOUNDS = {"beam": 1, "batch_tokens": 1, "nbest": 1, "min_len": 0, "no_repeat_ngram": 0,
                 "max_len_b": 0, "max_len_a": 0, "alpha": 0, "top_k": 0}
RECIPE_KEYS = ("beam", "alpha", "max_len_a", "max_len_b", "min_len", "no_repeat_ngram", "batch_tokens")
SEARCH_EXTRA = ("nbest", "sample", "temperature", "top_k", "top_p")
# what decoding runs in; int8: dynamic int8 linears (txcli/quantize.py, CPU only; CTranslate2's int8).
# Training's set (precision.TRAIN_PRECISIONS) has fp16 instead of int8.
DECODE_PRECISIONS = ("auto", "fp32", "bf16", "int8")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_choice(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UsageError(f"{option} {value!r}: expected one of {', '.join(choices)}")


def search_problem(beam: int, nbest: int, sample: bool, temperature: float, top_k: int, top_p: float) -> Optional[str]:
    """What is wrong with a search's settings, or None. The one copy of these rules:
    `search.SearchConfig` raises the problem as a ValueError, `lay_over` as the user's error."""
    for name, value in (("beam", beam), ("nbest", nbest), ("top_k", top_k)):
        if value < _LOWER_BOUNDS[name]:
            return f"{name} must be at least {_LOWER_BOUNDS[name]}, got {value}"
    if not sample and nbest > beam:
        return f"nbest ({nbest}) cannot exceed the beam size ({beam})"
    if temperature <= 0 or not 0 < top_p <= 1:
        return "sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 0"
    return None


def lay_over(recipe_decode, opts: DecodeOptions) -> dict:
    """The recipe's `decode` values with the command-line ones laid over them, checked: every
    RECIPE_KEYS and SEARCH_EXTRA name -> value."""
    for name, low in _LOWER_BOUNDS.items():
        value = getattr(opts, name)
        if value is not None and value < low:
            raise UsageError(f"{flag(name)} {value}: must be at least {low}")
    chosen = {k: getattr(recipe_decode, k) if getattr(opts, k) is None else getattr(opts, k) for k in RECIPE_KEYS}
    chosen.update({k: getattr(opts, k) for k in SEARCH_EXTRA})
    problem = search_problem(chosen["beam"], chosen["nbest"], chosen["sample"], chosen["temperature"],
                             chosen["top_k"], chosen["top_p"])
    if problem:
        raise UsageError(f"decoding options: {problem} (--beam, --nbest, --temperature, --top-p)")
    return chosen
