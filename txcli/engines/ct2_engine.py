"""The CTranslate2 engine: a CTranslate2 export of the run (made on the fly, see ct2_export.py).
Imports no torch: tokenizers and ctranslate2 only, so a one-line translation starts without
paying for torch's import.

Where CTranslate2 cannot do what the torch engine does (said once on stderr, see README):
- length penalty: CTranslate2 divides the log-probability by length^alpha (length counting
  </s>), not by GNMT's ((5 + length) / 6)^alpha, so with alpha > 0 scores differ and a beam can
  rank its hypotheses differently; at alpha 0 both rank by the plain log-probability;
- maximum length: one per batch (the batch's longest source gives it), not one per sentence;
- at the maximum length the torch engine ends the hypothesis with </s> (counting its
  log-probability), CTranslate2 just stops;
- <pad> and <s> are suppressed before the softmax (the torch engine masks them after it), so
  CTranslate2's log-probabilities are renormalised over the remaining tokens (a trained model
  puts next to nothing on them).
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Optional

from ..errors import TxError
from ..options import DECODE_PRECISIONS, DecodeOptions, check_choice, lay_over
from ..tokenizer import BOS, EOS, PAD, load_tokenizer
from ..translation import Hypothesis, token_batches
from .ct2_export import cached_export, export_info, missing_ctranslate2

COMPUTE_TYPES = {"fp32": "float32", "bf16": "bfloat16", "int8": "int8"}


def _import_ctranslate2():
    try:
        import ctranslate2
    except ImportError:
        raise missing_ctranslate2() from None
    return ctranslate2


def _device(ct2, name: str) -> str:
    check_choice("--device", name, ("auto", "cpu", "cuda"))
    gpus = ct2.get_cuda_device_count()
    if name == "auto":
        return "cuda" if gpus else "cpu"
    if name == "cuda" and not gpus:
        raise TxError("device 'cuda' asked for, but no CUDA device is available")
    return name


def _compute_type(ct2, precision: str, device: str) -> tuple[str, Optional[str]]:
    """CTranslate2's compute type for --precision, and a warning where it cannot run it."""
    check_choice("--precision", precision, DECODE_PRECISIONS)
    supported = ct2.get_supported_compute_types(device)
    if precision == "auto":  # as the torch engine: bf16 where the hardware does it, else fp32
        return ("bfloat16" if "bfloat16" in supported else "float32"), None
    wanted = COMPUTE_TYPES[precision]
    if wanted not in supported:  # CTranslate2 refuses to load then; the torch engine runs bf16 slowly instead
        return "float32", (f"--precision {precision}: CTranslate2 has no efficient {wanted} on this {device} "
                           "(no hardware support); running float32")
    return wanted, None


def _differences(s: dict) -> Optional[str]:
    """What CTranslate2 does differently for these settings, in one line (None: nothing that matters)."""
    notes = []
    if s["alpha"] > 0 and not s["sample"]:
        notes.append(f"its length penalty is length^{s['alpha']:g} (length counting </s>), not GNMT's "
                     "((5+length)/6)^alpha, so scores and beam rankings differ")
    if s["max_len_a"] > 0:
        notes.append("its maximum output length is one per batch (from the longest source), not one per sentence")
    return "--engine ctranslate2: " + "; ".join(notes) if notes else None


def _settings(info: dict, decode: DecodeOptions) -> dict:
    settings = lay_over(SimpleNamespace(**info["decode"]), decode)
    settings["seed"] = decode.seed
    return settings


class CT2Engine:
    def __init__(self, translator, model_dir: Path, info: dict, settings: dict, compute_type: str,
                 warnings: list[str]):
        self.translator, self.model_dir, self.info, self.s = translator, model_dir, info, settings
        self.compute_type = compute_type
        # either tokenizer kind (a sentencepiece file holds a model per side: each loads its own)
        self.src_tok = load_tokenizer(model_dir / info["tokenizers"]["src"], "src")
        self.tgt_tok = load_tokenizer(model_dir / info["tokenizers"]["tgt"], "tgt")
        self.src_tokens = [self.src_tok.id_to_token(i) for i in range(self.src_tok.vocab_size)]
        self.tgt_ids = self.tgt_tok.get_vocab()
        self.max_len = info["max_len"]
        self.warning = "\n".join(w for w in warnings if w) or None

    @classmethod
    def open(cls, path: Path, decode: DecodeOptions, device: str = "auto",
             threads: Optional[int] = None) -> "CT2Engine":
        """`path`: a run directory (its export is made or reused in RUN_DIR/ctranslate2/) or a
        directory written by `tx export ctranslate2`."""
        ct2 = _import_ctranslate2()
        path = Path(path)
        if not path.is_dir():
            raise TxError(f"{path}: no such run directory")
        notes = []
        info = export_info(path)
        if info is not None:
            model_dir = path
        elif (path / "recipe.yaml").is_file():
            model_dir, info, made = cached_export(path)
            if made:
                notes.append(f"exported the model for CTranslate2 into {model_dir} (reused while the weights are unchanged)")
        else:
            raise TxError(f"{path}: neither a tx run directory (no recipe.yaml) nor a CTranslate2 export "
                          "(no tx_export.json)")
        settings = _settings(info, decode)
        dev = _device(ct2, device)
        compute_type, warning = _compute_type(ct2, decode.precision, dev)
        try:
            translator = ct2.Translator(str(model_dir), device=dev, compute_type=compute_type,
                                        intra_threads=threads or 0, inter_threads=1)
        except (RuntimeError, ValueError) as err:
            raise TxError(f"{model_dir}: CTranslate2 cannot load it ({str(err).splitlines()[0]})") from None
        if settings["sample"]:
            ct2.set_random_seed(decode.seed)
        return cls(translator, model_dir, info, settings, compute_type,
                   notes + [warning, _differences(settings)])

    def with_options(self, decode: DecodeOptions) -> "CT2Engine":
        """The same loaded translator under other search options (a server's per-request
        settings); the precision stays the one it was loaded in."""
        return CT2Engine(self.translator, self.model_dir, self.info, _settings(self.info, decode),
                         self.compute_type, [])

    def settings(self) -> dict:
        s = self.s
        return {"engine": "ctranslate2", "beam": s["beam"], "alpha": s["alpha"], "sample": s["sample"],
                "precision": self.compute_type}

    def _limit(self, source_length: int) -> int:
        """The torch engine's per-sentence limit (search.max_output_lengths), in output tokens."""
        s = self.s
        return max(0, min(math.floor(s["max_len_a"] * source_length + s["max_len_b"]),
                          self.info["max_positions"] - 1))

    def translate_rows(self, rows: list[list[int]]) -> list[list[Hypothesis]]:
        s = self.s
        sample = s["sample"]
        options = dict(
            beam_size=1 if sample else s["beam"], num_hypotheses=s["nbest"],
            length_penalty=0.0 if sample else s["alpha"], no_repeat_ngram_size=s["no_repeat_ngram"],
            min_decoding_length=s["min_len"], suppress_sequences=[[PAD], [BOS]], return_scores=True,
            return_end_token=True, max_input_length=0,  # sources are already cut to max_len
        )
        if sample:
            options.update(sampling_topk=s["top_k"], sampling_topp=s["top_p"], sampling_temperature=s["temperature"])
        results: list[list[Hypothesis]] = [[] for _ in rows]
        for batch in token_batches([len(r) for r in rows], s["batch_tokens"]):
            source = [[self.src_tokens[i] for i in rows[k]] for k in batch]
            # at the limit the torch engine forces </s>; CTranslate2 stops without it
            limit = max(self._limit(len(rows[k])) for k in batch)
            # a minimum past the limit: the limit wins, as in the torch engine (CTranslate2 refuses it)
            options["min_decoding_length"] = min(s["min_len"], limit)
            out = self.translator.translate_batch(source, max_decoding_length=limit, **options)
            for k, result in zip(batch, out):
                results[k] = [self._hypothesis(tokens, score, options["length_penalty"])
                              for tokens, score in zip(result.hypotheses, result.scores)]
        return results

    def _hypothesis(self, tokens: list[str], score: float, alpha: float) -> Hypothesis:
        ended = bool(tokens) and tokens[-1] == EOS
        ids = [self.tgt_ids[t] for t in (tokens[:-1] if ended else tokens)]
        length = len(ids) + ended  # CTranslate2's length: tokens and </s>
        logprob = score * length ** alpha if length else score
        return Hypothesis(ids, score, logprob)
