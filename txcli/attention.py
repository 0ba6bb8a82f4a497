"""Every attention weight of a model, as data.

- `collect_attention`: one teacher-forced pass over a batch through the model's weights path
  (`encode_with_weights`, `decode_with_weights`), trimmed to each sentence's real length:
  encoder self-attention [H,S,S], decoder self-attention [H,T,T] and cross-attention [H,T,S]
  for every layer.
- `JsonlWriter` / `NpzWriter` stream one sentence at a time; `read_jsonl` / `read_npz` load them back.
- subwords merged to whitespace words, Pharaoh I/O, AER (the alignment methods: alignment.py).

The pictures of these weights are drawn in plots.py.

Token conventions: the encoder reads the source subwords followed by </s>; the decoder reads <s>
followed by the target subwords, and decoder row t is the step that reads tgt_tokens[t] and
predicts tgt_tokens[t+1] (</s> after the last one).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator, Optional

import numpy as np
import torch

from .decoding import pad_rows
from .model import Seq2SeqTransformer
from .tokenizer import METASPACE

KINDS = ("enc", "dec", "cross")
KIND_NAMES = {"enc": "encoder self-attention", "dec": "decoder self-attention", "cross": "cross-attention"}
AXIS_LABELS = {  # (queries, keys) of each kind, for pictures
    "enc": ("source (query)", "source (key)"),
    "dec": ("decoder input (query; row t predicts token t+1)", "decoder input (key)"),
    "cross": ("decoder input (query; row t predicts token t+1)", "source (key)"),
}
SPECIAL_TOKENS = {"<pad>", "<s>", "</s>"}
NPZ_FORMAT = "tx-attention/1"


@dataclass
class SentenceAttention:
    """The attention of one sentence pair: weights[kind][layer] is a float32 [heads, queries, keys]
    array; `heads` names the model heads kept, in order (the first axis)."""

    index: int
    src_tokens: list[str]
    tgt_tokens: list[str]
    heads: list[int]
    weights: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)
    src: str = ""
    tgt: str = ""

    def axis_tokens(self, kind: str) -> tuple[list[str], list[str]]:
        """(query tokens, key tokens) of one kind."""
        return {"enc": (self.src_tokens, self.src_tokens), "dec": (self.tgt_tokens, self.tgt_tokens),
                "cross": (self.tgt_tokens, self.src_tokens)}[kind]


@dataclass(frozen=True)
class Selection:
    """What to keep. layers/heads None = all; a negative layer counts from the last one."""

    kinds: tuple[str, ...] = KINDS
    layers: Optional[tuple[int, ...]] = None
    heads: Optional[tuple[int, ...]] = None

    def layers_of(self, kind: str, model: Seq2SeqTransformer) -> list[int]:
        n = model.cfg.encoder_layers if kind == "enc" else model.cfg.decoder_layers
        if self.layers is None:
            return list(range(n))
        picked = []
        for layer in self.layers:
            if not -n <= layer < n:
                raise ValueError(f"layer {layer} does not exist: the {KIND_NAMES[kind]} has {n} layers (0..{n - 1})")
            picked.append(layer % n)
        return sorted(set(picked))

    def heads_of(self, model: Seq2SeqTransformer) -> list[int]:
        n = model.cfg.heads
        if self.heads is None:
            return list(range(n))
        for head in self.heads:
            if not 0 <= head < n:
                raise ValueError(f"head {head} does not exist: the model has {n} heads (0..{n - 1})")
        return sorted(set(self.heads))

    def check(self, model: Seq2SeqTransformer) -> None:
        """Raise ValueError now, before any work, if a layer or head does not exist."""
        for kind in self.kinds:
            self.layers_of(kind, model)
        self.heads_of(model)


# --------------------------------------------------------------------------- the forward pass


@torch.inference_mode()
def collect_attention(model: Seq2SeqTransformer, src: list[list[int]], tgt_in: list[list[int]],
                      selection: Selection = Selection()) -> list[dict[str, dict[int, np.ndarray]]]:
    """Teacher-forced pass over a batch: src rows end with </s>, tgt_in rows start with <s>.
    Returns per sentence {kind: {layer: float32 [heads, queries, keys]}}, padding cut off."""
    pad = model.cfg.pad_id
    src_t = pad_rows(src, pad, next(model.parameters()).device)
    tgt_t = pad_rows(tgt_in, pad, src_t.device)
    src_pad = src_t == pad
    memory, enc = model.encode_with_weights(src_t)
    _, dec = model.decode_with_weights(tgt_t, memory, src_pad)
    by_kind = {"enc": enc, "dec": dec["dec"], "cross": dec["cross"]}
    heads = torch.tensor(selection.heads_of(model), device=src_t.device)
    kept = {kind: {layer: by_kind[kind][layer].index_select(1, heads).float().cpu().numpy()
                   for layer in selection.layers_of(kind, model)} for kind in selection.kinds}
    results = []
    for i, (s, t) in enumerate(zip(src, tgt_in)):
        rows = {"enc": len(s), "dec": len(t), "cross": len(t)}
        cols = {"enc": len(s), "dec": len(t), "cross": len(s)}
        results.append({kind: {layer: np.ascontiguousarray(w[i, :, : rows[kind], : cols[kind]])
                               for layer, w in layers.items()} for kind, layers in kept.items()})
    return results


# --------------------------------------------------------------------------- writers and readers


class JsonlWriter:
    """One JSON object per sentence: texts, tokens, heads, and attention[kind][layer] as nested
    lists [heads][queries][keys], rounded to `precision` digits. Layer keys are strings ("0")."""

    def __init__(self, stream: BinaryIO, precision: int = 4):
        self.stream, self.precision = stream, precision

    def write(self, rec: SentenceAttention) -> None:
        attention = {kind: {str(layer): np.round(w.astype(np.float64), self.precision).tolist()
                           for layer, w in layers.items()}
                     for kind, layers in rec.weights.items()}
        obj = {"index": rec.index, "src": rec.src, "tgt": rec.tgt, "src_tokens": rec.src_tokens,
               "tgt_tokens": rec.tgt_tokens, "heads": rec.heads, "attention": attention}
        self.stream.write((json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        self.stream.flush()


class NpzWriter:
    """A NumPy .npz archive written entry by entry (nothing accumulates in memory):
    "{i}/{kind}/{layer}" float32 [heads, queries, keys], "{i}/src_tokens", "{i}/tgt_tokens",
    "{i}/src", "{i}/tgt" (unicode arrays), and "meta" (JSON text) at the end.
    Loads with np.load(path) and no pickle. Works on unseekable streams (stdout) too."""

    def __init__(self, stream: BinaryIO):
        self.zip = zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True)
        self.indices: list[int] = []
        self.heads: Optional[list[int]] = None
        self.layers: dict[str, list[int]] = {}

    def _put(self, name: str, array: np.ndarray) -> None:
        with self.zip.open(name + ".npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)

    def write(self, rec: SentenceAttention) -> None:
        i = rec.index
        self._put(f"{i}/src_tokens", np.array(rec.src_tokens, dtype=str))
        self._put(f"{i}/tgt_tokens", np.array(rec.tgt_tokens, dtype=str))
        self._put(f"{i}/src", np.array(rec.src))
        self._put(f"{i}/tgt", np.array(rec.tgt))
        for kind, layers in rec.weights.items():
            for layer, w in layers.items():
                self._put(f"{i}/{kind}/{layer}", w.astype(np.float32, copy=False))
        self.indices.append(i)
        self.heads = rec.heads
        self.layers = {kind: sorted(layers) for kind, layers in rec.weights.items()}

    def close(self) -> None:
        meta = {"format": NPZ_FORMAT, "sentences": self.indices, "heads": self.heads, "layers": self.layers}
        self._put("meta", np.array(json.dumps(meta)))
        self.zip.close()


def read_jsonl(lines: Iterable[str]) -> Iterator[SentenceAttention]:
    for line in lines:
        if not line.strip():
            continue
        obj = json.loads(line)
        weights = {kind: {int(layer): np.asarray(w, dtype=np.float32) for layer, w in layers.items()}
                   for kind, layers in obj["attention"].items()}
        yield SentenceAttention(obj["index"], obj["src_tokens"], obj["tgt_tokens"], obj["heads"],
                                weights, obj["src"], obj["tgt"])


def read_npz(path) -> Iterator[SentenceAttention]:
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        for i in meta["sentences"]:
            weights = {kind: {layer: data[f"{i}/{kind}/{layer}"] for layer in layers}
                       for kind, layers in meta["layers"].items()}
            yield SentenceAttention(i, data[f"{i}/src_tokens"].tolist(), data[f"{i}/tgt_tokens"].tolist(),
                                    meta["heads"], weights, str(data[f"{i}/src"]), str(data[f"{i}/tgt"]))


# --------------------------------------------------------------------------- word alignment


def subword_word_ids(tokens: list[str], wordpiece: bool = False) -> list[Optional[int]]:
    """Index of the whitespace word each subword belongs to; None for <s>, </s>, <pad>.

    Metaspace tokenizers (BPE, unigram) mark a word's first piece with U+2581; a bare marker
    piece (before punctuation the vocabulary has no merge for) starts the word its next piece
    completes. WordPiece marks the other pieces with '##'."""
    ids: list[Optional[int]] = []
    word, has_content = -1, False
    for tok in tokens:
        if tok in SPECIAL_TOKENS:
            ids.append(None)
            continue
        if wordpiece:
            starts = not tok.startswith("##") or word < 0
        else:
            starts = word < 0 or (tok.startswith(METASPACE) and has_content)
        if starts:
            word, has_content = word + 1, False
        has_content = has_content or bool(tok.lstrip(METASPACE))
        ids.append(word)
    return ids


def format_pharaoh(pairs: Iterable[tuple[int, int]]) -> str:
    return " ".join(f"{i}-{j}" for i, j in pairs)


def parse_pharaoh(line: str) -> tuple[set, set]:
    """(sure, possible) links of one line: 'i-j' is sure, 'i?j' or 'i-j-P' possible ('i-j-S' sure).
    Raises ValueError naming the bad item."""
    sure, possible = set(), set()
    for item in line.split():
        parts = item.replace("?", "-?-").split("-")
        kind = "S"
        if len(parts) == 3 and parts[1] == "?":
            parts, kind = [parts[0], parts[2]], "P"
        elif len(parts) == 3 and parts[2] in ("S", "P"):
            parts, kind = parts[:2], parts[2]
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            raise ValueError(f"'{item}' is not an alignment link (expected i-j with 0-based word indices)")
        (sure if kind == "S" else possible).add((int(parts[0]), int(parts[1])))
    return sure, possible


def alignment_error_rate(predicted: Iterable[Iterable], sure: Iterable[set], possible: Iterable[set]) -> float:
    """Corpus AER (Och & Ney 2003): 1 - (|A&S| + |A&P|) / (|A| + |S|), with S counted in P."""
    hits, size_a, size_s = 0, 0, 0
    for a, s, p in zip(predicted, sure, possible):
        a = set(a)
        hits += len(a & s) + len(a & (p | s))
        size_a += len(a)
        size_s += len(s)
    return 0.0 if size_a + size_s == 0 else 1.0 - hits / (size_a + size_s)
