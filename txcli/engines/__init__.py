"""Decoding engines behind one small interface, so `tx translate` and `tx evaluate` run on either:

  torch        txcli's own model and search (decoding.translate_rows), every option
  ctranslate2  a CTranslate2 export of the run (made on the fly into RUN_DIR/ctranslate2/), faster,
               and started without importing torch; what it does differently is in ct2_engine.py

An engine has src_tok and tgt_tok (SubwordTokenizer), max_len (source subwords kept), warning
(one line for the user, or None), settings() (what evaluate reports),
translate_rows(rows) -> one list of hypotheses (translation.Hypothesis fields) per id row, and
with_options(DecodeOptions) -> the same loaded model under other search options (tx serve).
This module imports neither torch nor ctranslate2: each engine is imported when asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import UsageError
from ..options import DecodeOptions, check_choice

ENGINES = ("torch", "ctranslate2")


def open_engine(name: str, run_dirs: Path | list[Path], decode: DecodeOptions, device: str = "auto",
                threads: Optional[int] = None):
    """The engine `name` for a run directory (or, for ctranslate2, an exported directory); the
    torch engine also takes several, decoded as an ensemble."""
    check_choice("--engine", name, ENGINES)
    paths = [run_dirs] if isinstance(run_dirs, (str, Path)) else list(run_dirs)
    if name == "ctranslate2":
        if len(paths) > 1:
            raise UsageError("--engine ctranslate2 decodes one model: an ensemble of runs needs --engine torch")
        from .ct2_engine import CT2Engine

        return CT2Engine.open(paths[0], decode, device, threads)
    from .torch_engine import TorchEngine

    return TorchEngine.open(paths if len(paths) > 1 else paths[0], decode, device, threads)
