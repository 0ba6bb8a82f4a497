"""Marian (OPUS-MT) models in Hugging Face's layout <-> tx models: the configuration rules, the
vocabulary remap, the positional permutation and the weight files (the key map, both ways, is
marian_weights.py). Core: no
command-line libraries; callers get ValueError with one line naming the file, key or field.

Three differences between the two layouts, and what this module does about each:

- Positions. Both use the paper's sinusoids at the same frequencies, but tx interleaves them
  (sin on even columns, cos on odd ones) while Marian puts every sine in [0, d/2) and every cosine
  in [d/2, d). A fixed permutation of the d_model axis turns one into the other exactly: tx column
  j is Marian column PERM[j] (PERM[2i] = i, PERM[2i+1] = d/2 + i). Applied to every weight that
  reads the residual stream (its columns), writes it (its rows and bias), normalises it (LayerNorm
  gain and bias: a permutation commutes with mean and variance) and to the embeddings, it gives a
  tx model whose residual stream is Marian's, permuted: the same function. Chosen over a layout
  option in the model because the model file then stays the paper's, with no option every other
  path (CTranslate2 export, attention, int8) would have to learn; the cost is a gather per weight
  at import and export, exact (no arithmetic) and so bit for bit reversible.
- Vocabulary. tx fixes <pad>=0, <unk>=1, <s>=2, </s>=3; Marian has </s>=0, <unk>=1, <pad>=last
  and starts decoding from <pad>. tx id order is [pad, unk, start, eos, every other Marian id in
  order]: tx's <s> row is the Marian decoder-start row (and tx's <pad> row a copy of it), so tx's
  search starts where Marian's does; tx never generates <pad> or <s> (search._constrain), the two
  ids Marian's <pad> became. Embedding rows and the logits bias are gathered in that order.
- Output bias. Marian adds `final_logits_bias` after the (tied) output projection: tx's
  `output_bias` option. tx's extra <pad> row gets SILENT_ROW_BIAS there, so tx's log-probabilities
  are Marian's (one <pad> term in the softmax, not two).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .tokenizer import SPECIALS

ACTIVATIONS = {"swish": "silu", "silu": "silu", "relu": "relu", "gelu": "gelu"}  # Marian's name -> tx's
SPECIAL_NAMES = ("</s>", "<unk>", "<pad>")
WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")  # preferred first
MAX_CONFIG_BYTES = 1 << 20
MAX_VOCAB_BYTES = 64 << 20  # a vocab.json of a million entries is ~30 MB
# The output bias of tx's <pad> row on import: never generated, never a target, and so far below
# any real logit that its softmax term is zero in float32. Finite, not -inf: label smoothing sums
# every logit, and -inf would make the fine-tuning loss infinite (this adds ~eps*100/V nats to it).
SILENT_ROW_BIAS = -100.0


# --------------------------------------------------------------------------- the permutation


def permutation(d_model: int) -> torch.Tensor:
    """PERM: tx column j holds Marian column PERM[j] (sines then cosines -> interleaved)."""
    half = d_model // 2
    perm = torch.empty(d_model, dtype=torch.long)
    perm[0::2] = torch.arange(half)
    perm[1::2] = torch.arange(half, d_model)
    return perm


def marian_positions(n_positions: int, d_model: int) -> torch.Tensor:
    """Marian's table (sines in the first half, cosines in the second), at tx's float64 precision."""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    angle = pos / torch.pow(10000.0, torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=1).float()


# --------------------------------------------------------------------------- configuration


@dataclass
class MarianShape:
    """What tx takes from a Marian config.json."""

    model: dict  # tx ModelConfig fields, vocabulary sizes included
    shared_vocab: bool  # one vocab.json for both sides (else target_vocab.json too)
    eos_id: int
    pad_id: int
    start_id: int  # decoder_start_token_id


def read_json_file(path: Path, what: str, max_bytes: int = MAX_CONFIG_BYTES) -> dict:
    """A JSON object from a file of at most max_bytes (a slip never reads gigabytes)."""
    if not path.is_file():
        raise ValueError(f"{path}: missing ({what})")
    if path.stat().st_size > max_bytes:
        raise ValueError(f"{path}: larger than {max_bytes:,} bytes; not {what}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return data


def _int(config: dict, name: str, where: str) -> int:
    value = config.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{where}: {name}: expected a non-negative integer, got {value!r}")
    return value


# (field, value that tx cannot take, why): Marian variants tx's model does not have
REFUSED = (
    ("normalize_before", True, "pre-norm Marian variants are not supported (tx imports post-norm)"),
    ("add_final_layer_norm", True, "a final layer norm is a pre-norm variant; not supported"),
    ("normalize_embedding", True, "a layer norm on the embeddings is not supported"),
    ("layernorm_embedding", True, "a layer norm on the embeddings is not supported"),
    ("static_position_embeddings", False, "learned positions are not supported (tx has sinusoids)"),
    ("scale_embedding", False, "tx always scales embeddings by sqrt(d_model)"),
    ("add_bias_logits", True, "a bias inside the logits projection is not supported"),
)


def read_config(config: dict, where: str) -> MarianShape:
    """config.json -> MarianShape; ValueError naming the field tx cannot take."""
    if config.get("model_type") != "marian":
        raise ValueError(f"{where}: model_type: {config.get('model_type')!r}, not 'marian'")
    for field, bad, why in REFUSED:
        if config.get(field, not bad) == bad:
            raise ValueError(f"{where}: {field}: {bad}: {why}")
    d = _int(config, "d_model", where)
    if d == 0 or d % 2:
        raise ValueError(f"{where}: d_model: {d}: must be even and positive")
    for enc, dec in (("encoder_attention_heads", "decoder_attention_heads"), ("encoder_ffn_dim", "decoder_ffn_dim")):
        if _int(config, enc, where) != _int(config, dec, where):
            raise ValueError(f"{where}: {dec}: {config[dec]} differs from {enc} {config[enc]} (tx has one value for both)")
    activation = config.get("activation_function", "gelu")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{where}: activation_function: {activation!r} (tx has {sorted(ACTIVATIONS)})")
    heads = _int(config, "encoder_attention_heads", where)
    if heads == 0 or d % heads:
        raise ValueError(f"{where}: encoder_attention_heads: {heads} does not divide d_model {d}")
    vocab = _int(config, "vocab_size", where)
    dec_vocab = config.get("decoder_vocab_size") or vocab
    shared = bool(config.get("share_encoder_decoder_embeddings", True))
    if shared and dec_vocab != vocab:
        raise ValueError(f"{where}: decoder_vocab_size: {dec_vocab} differs from vocab_size {vocab} "
                         "with share_encoder_decoder_embeddings")
    eos = config.get("eos_token_id")
    if isinstance(eos, list) and len(eos) == 1:
        eos = eos[0]
    if not isinstance(eos, int):
        raise ValueError(f"{where}: eos_token_id: {eos!r}: expected one id")
    pad = _int(config, "pad_token_id", where)
    start = config.get("decoder_start_token_id", pad)
    if not isinstance(start, int):
        raise ValueError(f"{where}: decoder_start_token_id: {start!r}: expected one id")
    tied = bool(config.get("tie_word_embeddings", True))
    # one extra row on each side: tx's <s> (the decoder-start row) next to tx's <pad>
    model = dict(src_vocab_size=vocab + 1, tgt_vocab_size=dec_vocab + 1, d_model=d, heads=heads,
                 ff=_int(config, "encoder_ffn_dim", where), encoder_layers=_int(config, "encoder_layers", where),
                 decoder_layers=_int(config, "decoder_layers", where), dropout=float(config.get("dropout", 0.1)),
                 norm="post", activation=ACTIVATIONS[activation], tie_embeddings=tied,
                 share_embeddings=tied and shared, output_bias=True)
    return MarianShape(model, shared, eos, pad, start)


# --------------------------------------------------------------------------- vocabulary


@dataclass
class VocabRemap:
    """One side's ids. order[t] is the Marian id whose row tx id t takes; names[t] tx's token."""

    order: list[int]
    names: list[str]
    lookup: dict[str, int]  # every Marian token -> its tx id (what the tokenizer looks up)


def read_vocab(path: Path, size: int, where_size: str) -> dict[str, int]:
    vocab = read_json_file(path, "the vocabulary", MAX_VOCAB_BYTES)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in vocab.values()):
        raise ValueError(f"{path}: ids must be integers")
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise ValueError(f"{path}: ids are not 0..{len(vocab) - 1}, each once")
    if len(vocab) != size:
        raise ValueError(f"{path}: {len(vocab)} entries, but {where_size} is {size}")
    for token in SPECIAL_NAMES:
        if token not in vocab:
            raise ValueError(f"{path}: no {token} entry")
    if SPECIALS[2] in vocab:
        raise ValueError(f"{path}: has a {SPECIALS[2]} entry; tx reserves {SPECIALS[2]} for its start symbol")
    return vocab


def remap_vocab(vocab: dict[str, int], start_id: int) -> VocabRemap:
    """tx order: Marian's <pad>, <unk>, decoder start, </s>, then every other id as Marian has them."""
    pad, unk, eos = vocab["<pad>"], vocab["<unk>"], vocab["</s>"]
    names = {i: t for t, i in vocab.items()}
    if start_id not in names:
        raise ValueError(f"decoder_start_token_id: {start_id} is outside the vocabulary")
    rest = [i for i in range(len(vocab)) if i not in (pad, unk, eos)]
    order = [pad, unk, start_id, eos] + rest
    tx_names = list(SPECIALS) + [names[i] for i in rest]
    position = {m: t for t, m in enumerate(order) if t != 2}  # tx id 2 (<s>) is never a Marian token
    lookup = {token: position[i] for token, i in vocab.items()}
    return VocabRemap(order, tx_names, lookup)


def marian_vocab_from_tx(names: list[str]) -> tuple[dict[str, int], list[int]]:
    """The reverse, for export: Marian's layout (</s>=0, <unk>=1, tx's pieces, <pad>=last) and,
    per Marian id, the tx row it takes (<pad>: tx's <s>, the decoder-start row)."""
    rows = [3, 1] + list(range(len(SPECIALS), len(names))) + [2]
    tokens = ["</s>", "<unk>"] + names[len(SPECIALS):] + ["<pad>"]
    if len(set(tokens)) != len(tokens):
        raise ValueError("the vocabulary names a token twice; it cannot be a vocab.json")
    return {t: i for i, t in enumerate(tokens)}, rows


# --------------------------------------------------------------------------- weight files


def read_weights(hf_dir: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """model.safetensors if there is one, else pytorch_model.bin through torch's weights-only
    loader (never the full unpickler: a planted pickle payload is refused, not run)."""
    for name in WEIGHTS_FILES:
        path = hf_dir / name
        if not path.is_file():
            continue
        if name.endswith(".safetensors"):
            from safetensors import SafetensorError
            from safetensors.torch import load_file

            try:
                return path, load_file(str(path))
            except (SafetensorError, OSError, ValueError) as err:
                raise ValueError(f"{path}: not a readable safetensors file ({str(err).splitlines()[0]})") from None
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # UnpicklingError for a refused global, and the zip/pickle errors
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ValueError(f"{path}: refused by torch's weights-only loader ({first[:200]})") from None
        if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
            raise ValueError(f"{path}: not a state dict of tensors")
        return path, weights
    raise ValueError(f"{hf_dir}: no model.safetensors or pytorch_model.bin")


def decode_defaults(generation: dict, shape: MarianShape, where: str) -> dict:
    """generation_config.json -> tx's recipe `decode` values: num_beams -> beam. Its max_length
    (512 tokens for every sentence) is not taken: tx allocates the key/value cache for the longest
    output allowed, so it keeps its relative limit (max_len_a x source + max_len_b, capped by the
    positions); transformers' length penalty is not tx's (GNMT), so alpha stays tx's default."""
    out = {}
    beams = generation.get("num_beams")
    if beams is not None:
        if isinstance(beams, bool) or not isinstance(beams, int) or not 1 <= beams <= 1024:
            raise ValueError(f"{where}: num_beams: {beams!r}: expected an integer from 1 to 1024")
        out["beam"] = beams
    bad = generation.get("bad_words_ids")
    if bad not in (None, [[shape.pad_id]]):
        raise ValueError(f"{where}: bad_words_ids: {bad!r}: tx forbids only Marian's <pad> ({shape.pad_id})")
    return out


def check_spm_files(hf_dir: Path) -> None:
    if not (hf_dir / "source.spm").is_file():
        if any((hf_dir / n).exists() for n in ("source.bpe", "bpe.codes", "merges.txt")):
            raise ValueError(f"{hf_dir / 'source.spm'}: missing: BPE-based OPUS models are not supported "
                             "(tx imports sentencepiece-based ones)")
        raise ValueError(f"{hf_dir / 'source.spm'}: missing (the source sentencepiece model)")
    if not (hf_dir / "target.spm").is_file():
        raise ValueError(f"{hf_dir / 'target.spm'}: missing (the target sentencepiece model)")


def tokenizers(hf_dir: Path, shape: MarianShape):
    """The tx tokenizers of a Marian directory (sentencepiece_tokenizer, Marian mode) and each
    side's VocabRemap: ((src_tok, tgt_tok), (src_remap, tgt_remap)). A shared vocabulary gives one
    tokenizer file (joint) holding both sentencepiece models."""
    from .sentencepiece_tokenizer import SentencePieceTokenizer

    check_spm_files(hf_dir)
    source, target = (hf_dir / "source.spm").read_bytes(), (hf_dir / "target.spm").read_bytes()
    cfg = shape.model
    src_vocab = read_vocab(hf_dir / "vocab.json", cfg["src_vocab_size"] - 1, "config.json vocab_size")
    if shape.shared_vocab:
        tgt_vocab = src_vocab
    else:
        tgt_vocab = read_vocab(hf_dir / "target_vocab.json", cfg["tgt_vocab_size"] - 1, "config.json decoder_vocab_size")
    for name, value, path in (("eos_token_id", shape.eos_id, "</s>"), ("pad_token_id", shape.pad_id, "<pad>")):
        if tgt_vocab[path] != value:
            raise ValueError(f"{hf_dir / 'config.json'}: {name}: {value}, but the vocabulary has {path} at {tgt_vocab[path]}")
    src_map = remap_vocab(src_vocab, src_vocab["<pad>"])  # the source never starts with <s>: a copy of <pad>
    tgt_map = remap_vocab(tgt_vocab, shape.start_id)
    try:
        if shape.shared_vocab:
            models = {"src": source, "tgt": target}
            src_tok = SentencePieceTokenizer(models, "src", tgt_map.names, tgt_map.lookup, marian=True)
            tgt_tok = SentencePieceTokenizer(models, "tgt", tgt_map.names, tgt_map.lookup, marian=True)
            src_map = remap_vocab(src_vocab, shape.start_id)
        else:
            src_tok = SentencePieceTokenizer({"src": source, "tgt": source}, "src", src_map.names, src_map.lookup, marian=True)
            tgt_tok = SentencePieceTokenizer({"src": target, "tgt": target}, "tgt", tgt_map.names, tgt_map.lookup, marian=True)
    except RuntimeError as err:  # sentencepiece cannot parse one of the .spm files
        raise ValueError(f"{hf_dir}: source.spm or target.spm is not a sentencepiece model ({str(err).splitlines()[0]})") from None
    return (src_tok, tgt_tok), (src_map, tgt_map)
