"""The torch engine: the run's own model and search (txcli.decoding.translate_rows)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..commands.run import Run, open_for_decoding, run_decoding
from ..decoding import Decoding, make_generator, translate_rows
from ..search import Workspace
from ..options import DecodeOptions


class TorchEngine:
    def __init__(self, run: Run, decoding: Decoding):
        self.run, self.decoding = run, decoding
        self.src_tok, self.tgt_tok = run.src_tok, run.tgt_tok
        self.max_len = run.recipe.data.max_len
        self.warning = decoding.warning
        self.generator = make_generator(decoding)  # one random stream across chunks
        # one key/value cache buffer across calls (a server's batches, a file's chunks): a fresh
        # one is paged in again at every call. An engine decodes one batch at a time.
        self.workspace = Workspace()

    @classmethod
    def open(cls, run_dir: Path, decode: DecodeOptions, device: str = "auto",
             threads: Optional[int] = None) -> "TorchEngine":
        run = open_for_decoding(run_dir, device, threads)
        return cls(run, run_decoding(run, decode))

    def with_options(self, decode: DecodeOptions) -> "TorchEngine":
        """The same loaded model under other decoding options (a server's per-request settings),
        decoded by the same thread: the same workspace."""
        engine = TorchEngine(self.run, run_decoding(self.run, decode))
        engine.workspace = self.workspace
        return engine

    def settings(self) -> dict:
        s = self.decoding.search
        return {"engine": "torch", "beam": s.beam, "alpha": s.alpha, "sample": s.sample,
                "precision": self.decoding.precision}

    def translate_rows(self, rows: list[list[int]]):
        return translate_rows(self.run.model, rows, self.decoding, self.generator, self.workspace)
