"""The Transformer encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017).

One file, read top to bottom: config, positional encoding, attention and the causal mask, the two
layer kinds, the model. Token ids in, logits out: no files, tokenizers, command line, or cache (kv_cache)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from . import model_schema

if TYPE_CHECKING:  # the cache's types, for readers and type checkers; no import at run time
    from .kv_cache import DecoderCache, LayerCache

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}  # feed-forward nonlinearity; silu: Marian's


@dataclass
class ModelConfig:
    """The recipe's `model` section, same names, plus what only the model knows (rules: model_schema)."""

    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256
    heads: int = 4
    ff: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    norm: str = "pre"  # "pre": LN before each sublayer; "post": LN after the residual add (the paper)
    activation: str = "relu"  # feed-forward nonlinearity: "relu" | "gelu" | "silu"
    tie_embeddings: bool = True  # output projection reuses the target embedding matrix
    share_embeddings: bool = False  # one table for source and target (joint vocabulary)
    output_bias: bool = False  # a bias on the output projection even when tied (untied: always one)
    max_positions: int = 1024  # rows of the positional-encoding table
    pad_id: int = 0  # the tokenizer's <pad> (tokenizer.PAD_ID): the only special the model knows

    def __post_init__(self):
        model_schema.check_config(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From to_dict's output, or from the older key names model files may still hold."""
        return cls(**model_schema.current_keys(d, known={f.name for f in fields(cls)}))


def sinusoidal_positions(n_positions: int, d_model: int) -> Tensor:
    """[n_positions, d_model]; PE(pos,2i)=sin(pos/10000^(2i/d)), PE(pos,2i+1)=cos(pos/10000^(2i/d))"""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # float64 so large positions stay exact
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd d_model: one fewer cosine column
    return pe.float()


def xavier_linear(d_in: int, d_out: int, blocks: int = 1) -> nn.Linear:
    """nn.Linear with zero bias and Xavier-uniform weight; a fused projection (blocks > 1, e.g.
    W_Q, W_K, W_V stacked) gets each block initialised as the separate matrix it stands for."""
    linear = nn.Linear(d_in, d_out)
    with torch.no_grad():
        for block in linear.weight.chunk(blocks):
            nn.init.xavier_uniform_(block)
        linear.bias.zero_()
    return linear


def attention_weights_path(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
                           dropout: Optional[nn.Module] = None) -> tuple[Tensor, Tensor]:
    """Explicit softmax(QK^T/sqrt(d_k))V that also returns the weights. q [B,H,Tq,dk], k/v
    [B,H,Tk,dk], mask bool broadcastable to [B,H,Tq,Tk], True = may attend -> (out [B,H,Tq,dk],
    weights [B,H,Tq,Tk]); dropout (training only) hits the output, not the returned weights."""
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = dropout(weights) if dropout is not None else weights
    return dropped @ v, weights


def dropped(dropout: nn.Module, x: Tensor) -> Tensor:
    """dropout(x), not called where it gives x back as it is (eval mode, p = 0): a decoding step
    would make ten such calls for nothing."""
    return dropout(x) if dropout.training and dropout.p > 0.0 else x


def causal_mask(T: int, start: int = 0, device=None) -> Tensor:
    """The causal mask: query j sees keys <= start + j. [T, start+T] bool, True = may attend;
    the T queries are positions start..start+T-1, after `start` earlier (cached) steps."""
    return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start)


def key_padding_mask(pad_mask: Tensor) -> Tensor:
    """[B,S] True = padding -> [B,1,1,S] True = may attend. An all-padding row (softmax of all -inf
    is NaN) may attend to position 0: its outputs are padding anyway."""
    keep = ~pad_mask
    keep[:, 0] |= pad_mask.all(dim=1)
    return keep[:, None, None, :]


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention in `heads` subspaces of d_k = d_model/heads, then W_O. Two
    paths, equal results: the fused SDPA kernel, and `attention_weights_path` for the weights."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_k, self.dropout = heads, d_model // heads, dropout
        self.weight_dropout = nn.Dropout(dropout)  # on the attention weights, where the path is explicit
        self.out_proj = xavier_linear(d_model, d_model)

    def split_heads(self, x: Tensor, n: int) -> Tensor:
        """[B,T,n*D] -> [n,B,H,T,d_k]: n projections (q, k, v ...) split into heads."""
        B, T, _ = x.shape
        return x.view(B, T, n, self.heads, self.d_k).permute(2, 0, 3, 1, 4)

    def attend(self, q, k, v, mask=None, causal=False, need_weights=False):
        """q [B,H,Tq,dk], k/v [B,H,Tk,dk] -> (W_O · concat(heads) [B,Tq,D], weights or None).
        mask: True = may attend. causal: the queries are the last Tq of the Tk positions and
        causal_mask applies; with no earlier steps, as the kernel's own is_causal flag."""
        p = self.dropout if self.training else 0.0
        if need_weights or self.explicit_dropout(q, p):
            return self.attend_explicit(q, k, v, mask, causal, p, need_weights)
        if causal and k.size(-2) > q.size(-2):  # after cached steps: is_causal would mean causal_mask(T, 0)
            Tq = q.size(-2)  # one new token sees every cached step: nothing to mask
            mask, causal = (causal_mask(Tq, k.size(-2) - Tq, q.device) if Tq > 1 else None), False
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=causal)
        return self.out_proj(out.transpose(1, 2).flatten(2)), None  # [B,Tq,H*d_k]: heads concatenated

    def explicit_dropout(self, q: Tensor, p: float) -> bool:
        """Dropout on CPU, whose fused kernel has none and falls back to the explicit path anyway: taken
        here, the weights go through weight_dropout, a module the caller may replace (a cheaper mask)."""
        return p > 0.0 and q.device.type == "cpu"

    def attend_explicit(self, q, k, v, mask, causal: bool, p: float, need_weights: bool):
        """attend through attention_weights_path: the weights come out, weight_dropout goes in."""
        if causal:  # spelled out, cached steps or not
            mask = causal_mask(q.size(-2), k.size(-2) - q.size(-2), q.device)
        out, weights = attention_weights_path(q, k, v, mask, self.weight_dropout if p > 0.0 else None)
        return self.out_proj(out.transpose(1, 2).flatten(2)), weights if need_weights else None


class SelfAttention(MultiHeadAttention):
    """Queries, keys and values all from x, with one fused projection for W_Q, W_K, W_V."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__(d_model, heads, dropout)
        self.qkv_proj = xavier_linear(d_model, 3 * d_model, blocks=3)

    def forward(self, x, mask=None, causal=False, cache: Optional[LayerCache] = None, need_weights=False):
        """With a cache, x holds only the new steps: their keys and values join the cached ones."""
        qkv = self.qkv_proj(x)
        if cache is None:
            q, k, v = self.split_heads(qkv, 3)
        else:
            D = x.size(-1)
            q = self.split_heads(qkv[:, :, :D], 1)[0]
            k, v = cache.append(qkv[:, :, D:])
        return self.attend(q, k, v, mask, causal, need_weights)


class CrossAttention(MultiHeadAttention):
    """Queries from the decoder, keys and values from the encoder memory (fused W_K, W_V)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__(d_model, heads, dropout)
        self.q_proj = xavier_linear(d_model, d_model)
        self.kv_proj = xavier_linear(d_model, 2 * d_model, blocks=2)

    def memory_kv(self, memory: Tensor) -> Tensor:
        """[B,S,D] -> [2,B,H,S,d_k]; a decoder cache computes it once per sentence."""
        return self.split_heads(self.kv_proj(memory), 2)

    def forward(self, x, memory_kv, mask, need_weights=False):
        """x [R,T,D], memory_kv [2,B,H,S,d_k], mask [B,1,1,S]; R = B but in beam search."""
        beams = x.size(0) // memory_kv.size(1)
        if beams > 1:
            return self.beams_together(x, memory_kv, mask, need_weights, beams)
        q = self.split_heads(self.q_proj(x), 1)[0]
        return self.attend(q, memory_kv[0], memory_kv[1], mask, False, need_weights)

    def beams_together(self, x, memory_kv, mask, need_weights: bool, G: int):
        """Beam search: memory_kv and mask hold one row per sentence for G consecutive rows of x (its
        beams), whose queries attend together as G*T queries of one row: keys and values read once."""
        R, T, D = x.shape
        out, weights = self.forward(x.reshape(R // G, G * T, D), memory_kv, mask, need_weights)  # a view
        if weights is not None:  # [B,H,G*T,S] -> [B*G,H,T,S]
            weights = weights.unflatten(2, (G, T)).transpose(1, 2).flatten(0, 1)
        return out.reshape(R, T, D), weights  # back to one row per beam


class FeedForward(nn.Module):
    """FFN(x) = W_2 · act(W_1 x + b_1) + b_2, applied at every position alike."""

    def __init__(self, d_model: int, ff: int, dropout: float, activation: str):
        super().__init__()
        self.fc1 = xavier_linear(d_model, ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = xavier_linear(ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(dropped(self.dropout, self.activation(self.fc1(x))))


class Residual(nn.Module):
    """Residual connection and LayerNorm around a sublayer F: "pre", x + Dropout(F(LN(x))), is
    stable without warmup tricks; "post", LN(x + Dropout(F(x))), is the paper's arrangement."""

    def __init__(self, d_model: int, dropout: float, norm: str):
        super().__init__()
        self.pre = norm == "pre"
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x) if self.pre else x

    def add(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        x = x + dropped(self.dropout, sublayer_out)
        return x if self.pre else self.norm(x)


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.self_attn_res = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.ff = FeedForward(cfg.d_model, cfg.ff, cfg.dropout, cfg.activation)
        self.ff_res = Residual(cfg.d_model, cfg.dropout, cfg.norm)

    def forward(self, x, src_mask, need_weights=False):
        """x [B,S,D], src_mask [B,1,1,S] -> (x, self-attention weights or None)."""
        h, weights = self.self_attn(self.self_attn_res.sublayer_input(x), src_mask, need_weights=need_weights)
        x = self.self_attn_res.add(x, h)
        x = self.ff_res.add(x, self.ff(self.ff_res.sublayer_input(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.self_attn_res = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.cross_attn = CrossAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.cross_attn_res = Residual(cfg.d_model, cfg.dropout, cfg.norm)
        self.ff = FeedForward(cfg.d_model, cfg.ff, cfg.dropout, cfg.activation)
        self.ff_res = Residual(cfg.d_model, cfg.dropout, cfg.norm)

    def forward(self, x, memory, src_mask, cache: Optional[LayerCache] = None, need_weights=False):
        """x [B,T,D], memory [B',S,D] (unread with a cache: it holds their keys and values),
        src_mask [B',1,1,S] -> (x, self- and cross-attention weights, None unless need_weights)."""
        memory_kv = self.cross_attn.memory_kv(memory) if cache is None else cache.cross_kv
        h, self_w = self.self_attn(self.self_attn_res.sublayer_input(x), causal=True, cache=cache,
                                   need_weights=need_weights)
        x = self.self_attn_res.add(x, h)
        h, cross_w = self.cross_attn(self.cross_attn_res.sublayer_input(x), memory_kv, src_mask, need_weights)
        x = self.cross_attn_res.add(x, h)
        x = self.ff_res.add(x, self.ff(self.ff_res.sublayer_input(x)))
        return x, self_w, cross_w


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder Transformer: encode(src) -> memory; decode(tgt_in, memory) -> logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.src_embed = nn.Embedding(cfg.src_vocab_size, d)
        self.tgt_embed = self.src_embed if cfg.share_embeddings else nn.Embedding(cfg.tgt_vocab_size, d)
        self.register_buffer("positions", sinusoidal_positions(cfg.max_positions, d), persistent=False)
        self.embed_dropout = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        # Pre-norm leaves the stream un-normalised: one more LN per stack (post-norm, as Marian: none)
        final_norm = nn.LayerNorm if cfg.norm == "pre" else nn.Identity
        self.encoder_norm, self.decoder_norm = final_norm(d), final_norm(d)
        self.out_proj = nn.Linear(d, cfg.tgt_vocab_size, bias=cfg.output_bias or not cfg.tie_embeddings)
        # N(0, d^-1/2): sqrt(d)-scaled embeddings get unit variance; an untied output projection too
        for weight in (self.src_embed.weight, self.tgt_embed.weight, self.out_proj.weight):
            nn.init.normal_(weight, std=d ** -0.5)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if cfg.tie_embeddings:
            self.out_proj.weight = self.tgt_embed.weight

    def embed(self, tokens: Tensor, table: nn.Embedding, start: int = 0) -> Tensor:
        """Dropout(sqrt(d) * E[token] + PE[position]), positions start..start+T-1."""
        end = start + tokens.size(1)
        if end > self.positions.size(0):
            raise ValueError(f"sequence reaches position {end}, past max_positions={self.positions.size(0)}")
        return dropped(self.embed_dropout, table(tokens) * math.sqrt(self.cfg.d_model) + self.positions[start:end])

    def encode(self, src: Tensor) -> Tensor:
        """src [B,S] -> memory [B,S,D]."""
        return self._encode(src, need_weights=False)[0]

    def encode_with_weights(self, src: Tensor) -> tuple[Tensor, list[Tensor]]:
        """src [B,S] -> (memory [B,S,D], self-attention weights [B,H,S,S] per layer)."""
        return self._encode(src, need_weights=True)

    def _encode(self, src: Tensor, need_weights: bool):
        src_mask = key_padding_mask(src == self.cfg.pad_id)
        x = self.embed(src, self.src_embed)
        all_weights = []
        for layer in self.encoder:
            x, weights = layer(x, src_mask, need_weights)
            all_weights.append(weights)
        return self.encoder_norm(x), all_weights

    def decode(self, tgt_in: Tensor, memory: Optional[Tensor], src_pad_mask: Tensor,
               cache: Optional[DecoderCache] = None) -> Tensor:
        """tgt_in [B,T] -> logits [B,T,V] (pre-softmax). Without a cache: teacher forcing over the
        whole prefix. With a cache (kv_cache.new_cache): tgt_in holds only the new tokens, at positions
        cache.length on, seeing every cached step; the cache advances by T, `memory` is unread (None)
        and the source mask is the cache's own (src_pad_mask is cache.src_pad_mask)."""
        return self._decode(tgt_in, memory, src_pad_mask, cache, need_weights=False)[0]

    def decode_with_weights(self, tgt_in: Tensor, memory: Optional[Tensor], src_pad_mask: Tensor,
                            cache: Optional[DecoderCache] = None) -> tuple[Tensor, dict[str, list[Tensor]]]:
        """As decode, and the weights: (logits, {"dec": self-attention [B,H,T,T_keys] per layer,
        "cross": cross-attention [B,H,T,S] per layer})."""
        return self._decode(tgt_in, memory, src_pad_mask, cache, need_weights=True)

    def _decode(self, tgt_in, memory, src_pad_mask, cache, need_weights: bool):
        src_mask = key_padding_mask(src_pad_mask) if cache is None else cache.src_mask
        x = self.embed(tgt_in, self.tgt_embed, 0 if cache is None else cache.length)
        layer_caches = [None] * len(self.decoder) if cache is None else cache.layers
        weights = {"dec": [], "cross": []}
        for layer, layer_cache in zip(self.decoder, layer_caches):
            x, self_w, cross_w = layer(x, memory, src_mask, layer_cache, need_weights)
            weights["dec"].append(self_w)
            weights["cross"].append(cross_w)
        return self.out_proj(self.decoder_norm(x)), weights

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing (training): src [B,S], tgt_in [B,T] -> logits [B,T,V]."""
        return self.decode(tgt_in, self.encode(src), src == self.cfg.pad_id)
