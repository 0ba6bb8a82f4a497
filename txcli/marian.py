"""Marian (OPUS-MT) models in Hugging Face's layout <-> tx models: the configuration rules, the
vocabulary remap, the positional permutation and the weight key map, both ways. Core: no
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


# --------------------------------------------------------------------------- the key map
#
# Per Marian key: the tx key, how the d_model axis is permuted ("in": columns read the residual
# stream, "out": rows (or a vector) written to it or normalised over it, "none": the head/ffn
# space), and for fused tx projections the block of rows it fills (block, of n blocks).


@dataclass(frozen=True)
class Rule:
    tx: str
    axis: str  # "in" | "out" | "none"
    shape: tuple[str, ...]  # the Marian tensor's shape, in "d" (d_model) and "ff"
    block: int = 0
    blocks: int = 1


def _layer_rules(side: str, i: int) -> dict[str, Rule]:
    m, t = f"model.{side}.layers.{i}", f"{side}.{i}"
    rules = {}

    def linear(marian: str, tx: str, axis: str, block: int = 0, blocks: int = 1, out: str = "d", inp: str = "d") -> None:
        # weight [out, in]: "in" permutes columns, "out" rows; a bias lies along the output axis
        rules[f"{m}.{marian}.weight"] = Rule(f"{t}.{tx}.weight", axis, (out, inp), block, blocks)
        rules[f"{m}.{marian}.bias"] = Rule(f"{t}.{tx}.bias", "out" if axis == "out" else "none", (out,), block, blocks)

    def norm(marian: str, tx: str) -> None:
        rules[f"{m}.{marian}.weight"] = Rule(f"{t}.{tx}.weight", "out", ("d",))
        rules[f"{m}.{marian}.bias"] = Rule(f"{t}.{tx}.bias", "out", ("d",))

    for block, name in enumerate("qkv"):
        linear(f"self_attn.{name}_proj", "self_attn.qkv_proj", "in", block, 3)
    linear("self_attn.out_proj", "self_attn.out_proj", "out")
    norm("self_attn_layer_norm", "self_attn_res.norm")
    if side == "decoder":
        linear("encoder_attn.q_proj", "cross_attn.q_proj", "in")
        linear("encoder_attn.k_proj", "cross_attn.kv_proj", "in", 0, 2)
        linear("encoder_attn.v_proj", "cross_attn.kv_proj", "in", 1, 2)
        linear("encoder_attn.out_proj", "cross_attn.out_proj", "out")
        norm("encoder_attn_layer_norm", "cross_attn_res.norm")
    linear("fc1", "ff.fc1", "in", out="ff")
    linear("fc2", "ff.fc2", "out", inp="ff")
    norm("final_layer_norm", "ff_res.norm")
    return rules


def layer_rules(encoder_layers: int, decoder_layers: int) -> dict[str, Rule]:
    rules: dict[str, Rule] = {}
    for side, n in (("encoder", encoder_layers), ("decoder", decoder_layers)):
        for i in range(n):
            rules.update(_layer_rules(side, i))
    return rules


EMBEDDING_KEYS = ("model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight")
POSITION_KEYS = ("model.encoder.embed_positions.weight", "model.decoder.embed_positions.weight")
HEAD_KEYS = ("lm_head.weight", "final_logits_bias")


def _permute(tensor: torch.Tensor, axis: str, perm: torch.Tensor) -> torch.Tensor:
    if axis == "in":
        return tensor[:, perm]
    if axis == "out":
        return tensor[perm]
    return tensor


def to_tx_state(weights: dict[str, torch.Tensor], shape: MarianShape, src: VocabRemap, tgt: VocabRemap,
                where: str) -> dict[str, torch.Tensor]:
    """Marian's state dict -> tx's (float32). ValueError naming the first key that is unknown,
    missing, the wrong shape, or a tied copy that is not a copy."""
    cfg = shape.model
    d, perm = cfg["d_model"], permutation(cfg["d_model"])
    rules = layer_rules(cfg["encoder_layers"], cfg["decoder_layers"])
    known = set(rules) | set(EMBEDDING_KEYS) | set(POSITION_KEYS) | set(HEAD_KEYS)
    for key in weights:
        if key not in known:
            raise ValueError(f"{where}: unknown weight {key!r} (not in the Marian layout tx imports; "
                             f"{cfg['encoder_layers']}+{cfg['decoder_layers']} layers)")
    weights = {k: v.float() for k, v in weights.items()}
    V_src, V_tgt = cfg["src_vocab_size"] - 1, cfg["tgt_vocab_size"] - 1

    def get(key: str, expected: tuple) -> torch.Tensor:
        if key not in weights:
            raise ValueError(f"{where}: missing weight {key!r}")
        if tuple(weights[key].shape) != expected:
            raise ValueError(f"{where}: {key}: shape {list(weights[key].shape)}, expected {list(expected)}")
        return weights[key]

    def same(a: str, b: str) -> None:
        if a in weights and b in weights and not torch.equal(weights[a], weights[b]):
            raise ValueError(f"{where}: {b} differs from {a}, but the config ties them")

    for key in POSITION_KEYS:  # derived, not learned: tolerated only when they are the sinusoids
        if key in weights:
            table = weights[key]
            if table.dim() != 2 or table.size(1) != d or not torch.allclose(
                    table, marian_positions(table.size(0), d), atol=1e-5):
                raise ValueError(f"{where}: {key}: not Marian's sinusoids (learned positions are not supported)")

    # embeddings: the encoder's and decoder's own keys are what transformers' forward reads;
    # model.shared.weight stands in for a table saved only once (tied copies are written once)
    shared = "model.shared.weight"
    src_key = next((k for k in ("model.encoder.embed_tokens.weight", shared) if k in weights), None)
    tgt_key = next((k for k in ("model.decoder.embed_tokens.weight", shared) if k in weights), None)
    if src_key is None or tgt_key is None:
        raise ValueError(f"{where}: missing weight {shared!r} (the embeddings)")
    src_table, tgt_table = get(src_key, (V_src, d)), get(tgt_key, (V_tgt, d))
    if cfg["share_embeddings"]:
        same(src_key, tgt_key)
    state = {"src_embed.weight": src_table[src.order][:, perm], "tgt_embed.weight": tgt_table[tgt.order][:, perm]}
    if cfg["tie_embeddings"]:
        same(tgt_key, "lm_head.weight")
        state["out_proj.weight"] = state["tgt_embed.weight"]
    else:
        state["out_proj.weight"] = get("lm_head.weight", (V_tgt, d))[tgt.order][:, perm]
    bias = weights.get("final_logits_bias", torch.zeros(1, V_tgt))
    if tuple(bias.shape) != (1, V_tgt):
        raise ValueError(f"{where}: final_logits_bias: shape {list(bias.shape)}, expected [1, {V_tgt}]")
    state["out_proj.bias"] = bias[0, tgt.order]
    # tx's <pad> row is a second copy of Marian's <pad> (tx's <s> is the first, the decoder start):
    # switched off, so the softmax has Marian's terms exactly once (e^-100 vanishes in float32 sums)
    state["out_proj.bias"][0] = SILENT_ROW_BIAS

    sizes = {"d": d, "ff": cfg["ff"]}
    fused: dict[str, list] = {}
    for key, rule in rules.items():
        tensor = _permute(get(key, tuple(sizes[s] for s in rule.shape)), rule.axis, perm)
        if rule.blocks == 1:
            state[rule.tx] = tensor
        else:
            fused.setdefault(rule.tx, [None] * rule.blocks)[rule.block] = tensor
    for name, blocks in fused.items():
        state[name] = torch.cat(blocks, dim=0)
    return {k: v.contiguous() for k, v in state.items()}


def from_tx_state(state: dict[str, torch.Tensor], cfg: dict, src_rows: list[int], tgt_rows: list[int],
                  shared_vocab: bool) -> dict[str, torch.Tensor]:
    """tx's state dict -> Marian's, the inverse of to_tx_state. src_rows/tgt_rows: per Marian id,
    the tx row (marian_vocab_from_tx). Tied tables are written once, under the keys
    transformers saves them by; the positions are left out, as transformers leaves them."""
    d = cfg["d_model"]
    inverse = torch.argsort(permutation(d))
    out: dict[str, torch.Tensor] = {}
    for key, rule in layer_rules(cfg["encoder_layers"], cfg["decoder_layers"]).items():
        tensor = state[rule.tx]
        if rule.blocks > 1:
            tensor = tensor.chunk(rule.blocks, dim=0)[rule.block]
        out[key] = _permute(tensor, rule.axis, inverse).contiguous()
    src = state["src_embed.weight"][src_rows][:, inverse].contiguous()
    tgt = state["tgt_embed.weight"][tgt_rows][:, inverse].contiguous()
    if shared_vocab and cfg["share_embeddings"]:  # one table, saved once as transformers does
        out["model.shared.weight"] = tgt  # the decoder-start row (tx's <s>) is Marian's <pad> row
    else:
        if shared_vocab:  # transformers expects the shared table's key too; its forward reads the other two
            out["model.shared.weight"] = src.clone()  # safetensors stores no two names for one tensor
        out["model.encoder.embed_tokens.weight"] = src
        out["model.decoder.embed_tokens.weight"] = tgt
    if not cfg["tie_embeddings"]:
        out["lm_head.weight"] = state["out_proj.weight"][tgt_rows][:, inverse].contiguous()
    bias = state.get("out_proj.bias")
    out["final_logits_bias"] = (bias[tgt_rows] if bias is not None else torch.zeros(len(tgt_rows))).reshape(1, -1).contiguous()
    return out


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
