"""The weight key map between Hugging Face's Marian layout and tx, both ways: one rule per Marian
key (its tx key, its shape, how the d_model permutation applies), and any key that no rule
names is an error. The layouts themselves (positions, vocabulary, output bias) are explained in
marian.py."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .marian import SILENT_ROW_BIAS, MarianShape, VocabRemap, marian_positions, permutation

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
