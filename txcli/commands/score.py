"""`tx score`: the model's log-probability of given translations, one line per sentence pair.

The log-probability counts every target subword and the closing </s>; the mean divides it by
that count. Pairs are read as a stream in chunks, sorted by length and batched by a token budget;
the output keeps the input order.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Optional

import torch

from ..data import read_pairs
from ..decoding import decoding_precision, pad_rows
from ..errors import UsageError
from ..options import check_choice
from ..precision import autocast
from ..schema import Corpus
from ..search import members
from ..streams import chunks, input_errors, open_output
from ..translation import token_batches
from ..tokenizer import BOS_ID, EOS_ID
from .run import Run, use_precision


@dataclass
class ScoreSummary:
    pairs: int = 0
    truncated: int = 0  # pairs with a side cut to the model's maximum length
    max_len: int = 0
    warning: Optional[str] = None  # about the settings (bf16 where it is slow)
    input_warning: Optional[str] = None  # lines whose invalid UTF-8 was replaced


@torch.inference_mode()
def token_logprobs(run: Run, pairs: list[tuple[list[int], list[int]]], batch_tokens: int,
                   precision: str = "fp32") -> list[list[float]]:
    """Per pair (source ids + </s>, target ids): log p(token) for each target id and </s>. With
    an ensemble: the mean of the models' log-probabilities, as in its beam search."""
    model = run.model
    models = members(model)
    results: list[list[float]] = [[] for _ in pairs]
    widths = [max(len(s), len(t) + 1) for s, t in pairs]
    for batch in token_batches(widths, batch_tokens):
        src = pad_rows([pairs[i][0] for i in batch], model.cfg.pad_id, run.device)
        tgt_in = pad_rows([[BOS_ID] + pairs[i][1] for i in batch], model.cfg.pad_id, run.device)
        tgt_out = pad_rows([pairs[i][1] + [EOS_ID] for i in batch], model.cfg.pad_id, run.device)
        picked = None
        for m in models:
            with autocast(run.device, precision):
                logits = m(src, tgt_in)
            lp = logits.float().log_softmax(-1).gather(2, tgt_out.unsqueeze(2)).squeeze(2)
            picked = lp if picked is None else picked + lp
        picked = picked / len(models)
        for row, i in enumerate(batch):
            results[i] = picked[row, : len(pairs[i][1]) + 1].tolist()
    return results


def _format(number: int, logprobs: list[float], tokens: list[str] | None, jsonl: bool) -> str:
    total = sum(logprobs)
    mean = total / len(logprobs)
    if jsonl:
        record = {"line": number, "logprob": round(total, 4), "mean": round(mean, 4), "length": len(logprobs)}
        if tokens is not None:
            record["tokens"] = tokens
            record["token_logprobs"] = [round(x, 4) for x in logprobs]
        return json.dumps(record, ensure_ascii=False)
    line = f"{total:.4f}\t{mean:.4f}"
    if tokens is not None:
        line += "\t" + " ".join(f"{t}/{x:.4f}" for t, x in zip(tokens, logprobs))
    return line


def check_request(src: Path, tgt: Path, fmt: str, batch_tokens: Optional[int]) -> None:
    """The options' mistakes, before the model is loaded."""
    check_choice("--format", fmt, ("text", "jsonl"))
    for option, path in (("--src", src), ("--tgt", tgt)):
        if not Path(path).is_file():
            raise UsageError(f"{option} {path}: file not found")
    if batch_tokens is not None and batch_tokens < 1:
        raise UsageError(f"--batch-tokens {batch_tokens}: must be at least 1")


def score_to(run: Run, src: Path, tgt: Path, output: Optional[Path], stdout: BinaryIO, **options) -> ScoreSummary:
    """The command: scores to --output (written whole or not at all) or stdout."""
    with open_output(output, stdout) as sink:
        return score_files(run, src, tgt, sink, **options)


def score_files(run: Run, src: Path, tgt: Path, sink: BinaryIO, batch_tokens: Optional[int] = None,
                jsonl: bool = False, show_tokens: bool = False, precision: str = "fp32",
                errors: str = "strict") -> ScoreSummary:
    """Score every (source, target) line pair of two aligned files into `sink`
    (batch_tokens None: the recipe's decode.batch_tokens; errors: strict or replace invalid UTF-8)."""
    batch_tokens = batch_tokens or run.recipe.decode.batch_tokens
    precision, warning = decoding_precision(precision, run.device)
    use_precision(run, precision)
    replaced = input_errors(errors)
    summary = ScoreSummary(max_len=run.recipe.data.max_len, warning=warning)
    pairs = read_pairs(Corpus(src=src, tgt=tgt), replaced)
    for chunk in chunks(pairs):
        src_ids = run.src_tok.encode_batch([s for s, _ in chunk])
        tgt_ids = run.tgt_tok.encode_batch([t for _, t in chunk])
        encoded = []
        for s, t in zip(src_ids, tgt_ids):
            summary.truncated += len(s) > summary.max_len or len(t) > summary.max_len
            encoded.append((s[: summary.max_len] + [EOS_ID], t[: summary.max_len]))
        scores = token_logprobs(run, encoded, batch_tokens, precision)
        out = []
        for k, ((_, t), lps) in enumerate(zip(encoded, scores)):
            tokens = [run.tgt_tok.id_to_token(i) for i in t] + ["</s>"] if show_tokens else None
            out.append(_format(summary.pairs + k + 1, lps, tokens, jsonl))
        sink.write(("\n".join(out) + "\n").encode("utf-8"))
        sink.flush()
        summary.pairs += len(chunk)
    summary.input_warning = replaced and replaced.warning()
    return summary

