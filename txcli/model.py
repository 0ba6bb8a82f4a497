"""The Transformer encoder-decoder of "Attention Is All You Need" (Vaswani et al., 2017).

One file, read top to bottom: config, positional encoding, attention, the two layer kinds,
the key/value cache for incremental decoding, and the full model. Knows nothing of files,
tokenizers or the command line; callers hand it token ids and get logits back.
"""

import math
from dataclasses import asdict, dataclass, fields
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

PAD_ID = 0  # tokenizer specials: <pad>=0, <unk>=1, <s>=2, </s>=3; the model only needs pad_id
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU}  # feed-forward nonlinearity, chosen once in __init__


@dataclass
class ModelConfig:
    src_vocab_size: int
    tgt_vocab_size: int
    d_model: int = 256
    heads: int = 4
    ff: int = 1024
    encoder_layers: int = 3
    decoder_layers: int = 3
    dropout: float = 0.1
    pre_norm: bool = True  # LN before each sublayer (True) or after the residual add (the paper)
    activation: str = "relu"  # feed-forward nonlinearity: "relu" | "gelu"
    share_embeddings: bool = False  # one table for source and target (joint vocabulary)
    tie_output: bool = True  # output projection reuses the target embedding matrix
    max_positions: int = 1024  # rows of the positional-encoding table
    pad_id: int = PAD_ID

    def __post_init__(self):
        sizes = ("src_vocab_size", "tgt_vocab_size", "d_model", "heads", "ff",
                 "encoder_layers", "decoder_layers", "max_positions")
        for name in sizes:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_model % self.heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {self.activation!r}")
        if self.share_embeddings and self.src_vocab_size != self.tgt_vocab_size:
            raise ValueError("share_embeddings needs equal source and target vocabulary sizes, got "
                             f"{self.src_vocab_size} and {self.tgt_vocab_size}")
        if not 0 <= self.pad_id < min(self.src_vocab_size, self.tgt_vocab_size):
            raise ValueError(f"pad_id {self.pad_id} is outside the vocabulary")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        names = {f.name for f in fields(cls)}
        if set(d) - names:
            raise ValueError(f"unknown model config keys: {sorted(set(d) - names)}")
        missing = {"src_vocab_size", "tgt_vocab_size"} - set(d)
        if missing:
            raise ValueError(f"missing model config keys: {sorted(missing)}")
        return cls(**d)


def sinusoidal_positions(n_positions: int, d_model: int) -> Tensor:
    """[n_positions, d_model]; PE(pos,2i)=sin(pos/10000^(2i/d)), PE(pos,2i+1)=cos(pos/10000^(2i/d))"""
    pos = torch.arange(n_positions, dtype=torch.float64).unsqueeze(1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)
    angle = pos / torch.pow(10000.0, two_i / d_model)  # float64 so large positions stay exact
    pe = torch.zeros(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle[:, : d_model // 2])  # odd d_model: one fewer cosine column
    return pe.float()


def attention_weights_path(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor] = None,
                           dropout_p: float = 0.0) -> tuple[Tensor, Tensor]:
    """Explicit softmax(QK^T/sqrt(d_k))V that also returns the attention weights.

    q [B,H,Tq,dk], k/v [B,H,Tk,dk]; mask bool broadcastable to [B,H,Tq,Tk], True = may attend.
    Returns (output [B,H,Tq,dk], weights [B,H,Tq,Tk]); dropout (training only) hits the output,
    not the returned weights.
    """
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = F.dropout(weights, dropout_p) if dropout_p > 0.0 else weights
    return dropped @ v, weights


def key_padding_mask(pad_mask: Tensor) -> Tensor:
    """[B,S] True = padding  ->  [B,1,1,S] True = may attend.

    An all-padding row would mask every key (softmax of all -inf is NaN), so such rows
    may attend to position 0; their outputs are padding anyway.
    """
    keep = ~pad_mask
    keep[:, 0] |= pad_mask.all(dim=1)
    return keep[:, None, None, :]


def xavier_linear(d_in: int, d_out: int, blocks: int = 1, bias: bool = True) -> nn.Linear:
    """nn.Linear with zero bias and Xavier-uniform weight; a fused projection (blocks > 1, e.g.
    W_Q, W_K, W_V stacked) gets each block initialised as the separate matrix it stands for."""
    linear = nn.Linear(d_in, d_out, bias=bias)
    with torch.no_grad():
        for block in linear.weight.chunk(blocks):
            nn.init.xavier_uniform_(block)
        if bias:
            linear.bias.zero_()
    return linear


# --------------------------------------------------------------------------- attention


class MultiHeadAttention(nn.Module):
    """Scaled dot-product attention in `heads` subspaces of d_k = d_model/heads, then W_O.

    Two paths with equal results: the fused SDPA kernel (fast), and `attention_weights_path`
    when the caller wants the per-head weights.
    """

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_k = heads, d_model // heads
        self.dropout = dropout
        self.out_proj = xavier_linear(d_model, d_model)

    def split_heads(self, x: Tensor, n: int) -> Tensor:
        """[B,T,n*D] -> [n,B,H,T,d_k]: n projections (q, k, v ...) split into heads."""
        B, T, _ = x.shape
        return x.view(B, T, n, self.heads, self.d_k).permute(2, 0, 3, 1, 4)

    def attend(self, q, k, v, mask=None, is_causal=False, need_weights=False):
        """q [B,H,Tq,dk], k/v [B,H,Tk,dk] -> (W_O · concat(heads) [B,Tq,D], weights or None)."""
        p = self.dropout if self.training else 0.0
        if need_weights:
            if is_causal:  # the weights path has no is_causal flag: spell the mask out
                mask = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
            out, weights = attention_weights_path(q, k, v, mask, p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=is_causal)
            weights = None
        B, H, T, d_k = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(B, T, H * d_k)), weights


class SelfAttention(MultiHeadAttention):
    """Queries, keys and values all from x, with one fused projection for W_Q, W_K, W_V."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__(d_model, heads, dropout)
        self.qkv_proj = xavier_linear(d_model, 3 * d_model, blocks=3)

    def forward(self, x, mask=None, is_causal=False, need_weights=False, kv_cache=None, start=0):
        """kv_cache [B,capacity,2,H,d_k]: this step's keys/values are written at `start`, and
        attention runs over every cached step up to and including them."""
        if kv_cache is None:
            q, k, v = self.split_heads(self.qkv_proj(x), 3)
            return self.attend(q, k, v, mask, is_causal, need_weights)
        B, T, D = x.shape
        qkv = self.qkv_proj(x)
        end = start + T
        # a step's keys and values are one contiguous row of the projection: one write per row
        kv_cache[:, start:end] = qkv[:, :, D:].view(B, T, 2, self.heads, self.d_k)
        q = self.split_heads(qkv[:, :, :D], 1)[0]
        k, v = kv_cache[:, :end].permute(2, 0, 3, 1, 4)  # [2,B,H,end,d_k], strided views
        return self.attend(q, k, v, mask, is_causal, need_weights)


class CrossAttention(MultiHeadAttention):
    """Queries from the decoder, keys and values from the encoder memory (fused W_K, W_V)."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__(d_model, heads, dropout)
        self.q_proj = xavier_linear(d_model, d_model)
        self.kv_proj = xavier_linear(d_model, 2 * d_model, blocks=2)

    def memory_kv(self, memory: Tensor) -> Tensor:
        """[B,S,D] -> [2,B,H,S,d_k]; computed once per sentence when decoding with a cache."""
        return self.split_heads(self.kv_proj(memory), 2)

    def forward(self, x, memory_kv, mask, need_weights=False):
        """memory_kv and mask may hold one row per sentence for G consecutive rows of x (the
        beams of a sentence): the G rows' queries then attend together, as G*T queries of one
        row, so each sentence's keys and values are read once, not once per beam."""
        R, T, D = x.shape
        G = R // memory_kv.size(1)
        if G > 1:  # [B*G,T,D] -> [B,G*T,D]: a view, the beams of a sentence are consecutive rows
            x = x.reshape(R // G, G * T, D)
        q = self.split_heads(self.q_proj(x), 1)[0]
        out, weights = self.attend(q, memory_kv[0], memory_kv[1], mask, False, need_weights)
        if G > 1:  # back to one row per beam
            out = out.reshape(R, T, D)
            if weights is not None:  # [B,H,G*T,S] -> [B*G,H,T,S]
                weights = weights.unflatten(2, (G, T)).transpose(1, 2).flatten(0, 1)
        return out, weights


# --------------------------------------------------------------------------- layers


class FeedForward(nn.Module):
    """FFN(x) = W_2 · act(W_1 x + b_1) + b_2, applied at every position alike."""

    def __init__(self, d_model: int, ff: int, dropout: float, activation: str):
        super().__init__()
        self.fc1 = xavier_linear(d_model, ff)
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout)
        self.fc2 = xavier_linear(ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.dropout(self.activation(self.fc1(x))))


class PreNormResidual(nn.Module):
    """x + Dropout(sublayer(LN(x))): the usual modern arrangement, stable without warmup tricks."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def sublayer_input(self, x: Tensor) -> Tensor:
        return self.norm(x)

    def add(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        return x + self.dropout(sublayer_out)


class PostNormResidual(PreNormResidual):
    """LN(x + Dropout(sublayer(x))): the paper's arrangement."""

    def sublayer_input(self, x: Tensor) -> Tensor:
        return x

    def add(self, x: Tensor, sublayer_out: Tensor) -> Tensor:
        return self.norm(x + self.dropout(sublayer_out))


class EncoderLayer(nn.Module):
    """Self-attention over the source, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        Residual = PreNormResidual if cfg.pre_norm else PostNormResidual
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.self_attn_res = Residual(cfg.d_model, cfg.dropout)
        self.ff = FeedForward(cfg.d_model, cfg.ff, cfg.dropout, cfg.activation)
        self.ff_res = Residual(cfg.d_model, cfg.dropout)

    def forward(self, x, key_mask, need_weights=False):
        h, weights = self.self_attn(self.self_attn_res.sublayer_input(x), key_mask, need_weights=need_weights)
        x = self.self_attn_res.add(x, h)
        x = self.ff_res.add(x, self.ff(self.ff_res.sublayer_input(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to the encoder memory, then the feed-forward block."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        Residual = PreNormResidual if cfg.pre_norm else PostNormResidual
        self.self_attn = SelfAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.self_attn_res = Residual(cfg.d_model, cfg.dropout)
        self.cross_attn = CrossAttention(cfg.d_model, cfg.heads, cfg.dropout)
        self.cross_attn_res = Residual(cfg.d_model, cfg.dropout)
        self.ff = FeedForward(cfg.d_model, cfg.ff, cfg.dropout, cfg.activation)
        self.ff_res = Residual(cfg.d_model, cfg.dropout)

    def forward(self, x, memory_kv, cross_mask, self_mask=None, is_causal=False,
                need_weights=False, kv_cache=None, start=0):
        h, self_w = self.self_attn(self.self_attn_res.sublayer_input(x), self_mask, is_causal,
                                   need_weights, kv_cache, start)
        x = self.self_attn_res.add(x, h)
        h, cross_w = self.cross_attn(self.cross_attn_res.sublayer_input(x), memory_kv, cross_mask, need_weights)
        x = self.cross_attn_res.add(x, h)
        x = self.ff_res.add(x, self.ff(self.ff_res.sublayer_input(x)))
        return x, self_w, cross_w


# --------------------------------------------------------------------------- incremental decoding


@dataclass(eq=False)
class DecoderCache:
    """Key/value cache for incremental decoding, all layers stacked in two tensors.

    self_kv   [L,B,capacity,2,H,d_k]  decoder self-attention keys/values, filled up to `length`
                                      in place, one step at a time (no torch.cat per step); a
                                      row's steps lie together, so writing a step and moving a
                                      row are contiguous copies
    cross_kv  [L,2,B',H,S,d_k]        cross-attention keys/values, computed once from the memory;
                                      B' = B, or one row per sentence when B = B' x beams
    src_pad_mask [B',S]               True = source padding
    length                            steps already decoded (the next token's position)

    Inference only: run under torch.inference_mode() or torch.no_grad().
    """

    self_kv: Tensor
    cross_kv: Tensor
    src_pad_mask: Tensor
    length: int = 0

    @property
    def capacity(self) -> int:
        return self.self_kv.size(2)

    @torch.no_grad()
    def select(self, index: torch.LongTensor, cross_index: Optional[torch.LongTensor] = None) -> None:
        """Keep/reorder batch rows (beam reordering, dropping finished sentences).

        cross_index: the rows of cross_kv and src_pad_mask to keep, where they differ from
        `index`: a beam search keeps one row per sentence, which its beams share (see
        CrossAttention), so they move only when sentences leave.
        """
        cross_index = index if cross_index is None else cross_index
        self.self_kv = _move_rows(self.self_kv, index, self.length)
        self.cross_kv = _take_rows(self.cross_kv, cross_index)
        self.src_pad_mask = self.src_pad_mask.index_select(0, cross_index)


def _moved_rows(index: Tensor) -> Tensor:
    """The positions i where index[i] != i: the only rows a reorder in place has to copy."""
    return (index != torch.arange(index.numel(), device=index.device)).nonzero().squeeze(1)


def _take_rows(buffer: Tensor, index: Tensor) -> Tensor:
    """buffer[:, :, index] for [L,2,B,...] buffers, in place where it does not grow: only rows
    whose source differs are copied, and the result is a narrowed view of the buffer."""
    rows = index.numel()
    if rows > buffer.size(2):
        return buffer.index_select(2, index)
    moved = _moved_rows(index)
    if moved.numel():
        buffer.index_copy_(2, moved, buffer.index_select(2, index[moved]))
    return buffer[:, :, :rows]


def _move_rows(buffer: Tensor, index: Tensor, steps: int) -> Tensor:
    """buffer[:, index] for the [L,B,capacity,...] self-attention cache, copying only the first
    `steps` positions of each row and, where it does not grow, only the rows whose source
    differs (beam search moves a fraction of them per step); the result is a view of the buffer."""
    rows, (L, B, capacity) = index.numel(), buffer.shape[:3]
    if rows > B:
        grown = buffer.new_empty((L, rows) + buffer.shape[2:])
        grown[:, :, :steps] = buffer[:, :, :steps].index_select(1, index)
        return grown
    moved = _moved_rows(index)
    if moved.numel():
        source = index[moved]
        for layer in buffer.flatten(2):  # [B, capacity * step size]: rows of contiguous steps
            filled = layer[:, : steps * (layer.size(1) // capacity)]
            filled.index_copy_(0, moved, filled.index_select(0, source))
    return buffer[:, :rows]


# --------------------------------------------------------------------------- the model


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
        # Pre-norm leaves the residual stream un-normalised: each stack ends with one more LN.
        self.encoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if cfg.pre_norm else nn.Identity()
        self.out_proj = nn.Linear(d, cfg.tgt_vocab_size, bias=not cfg.tie_output)
        # N(0, d^-1/2) so that sqrt(d)-scaled embeddings have unit variance; an untied output
        # projection starts like the embedding it would otherwise share.
        for weight in (self.src_embed.weight, self.tgt_embed.weight, self.out_proj.weight):
            nn.init.normal_(weight, std=d ** -0.5)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if cfg.tie_output:
            self.out_proj.weight = self.tgt_embed.weight

    def embed(self, tokens: Tensor, table: nn.Embedding, start: int = 0) -> Tensor:
        """Dropout(sqrt(d) * E[token] + PE[position]), positions start..start+T-1."""
        end = start + tokens.size(1)
        if end > self.positions.size(0):
            raise ValueError(f"sequence reaches position {end}, past max_positions={self.positions.size(0)}")
        x = table(tokens) * math.sqrt(self.cfg.d_model) + self.positions[start:end]
        return self.embed_dropout(x)

    def encode(self, src: Tensor, need_weights: bool = False):
        """src [B,S] -> memory [B,S,D]; with need_weights also a list over layers of [B,H,S,S]."""
        key_mask = key_padding_mask(src == self.cfg.pad_id)
        x = self.embed(src, self.src_embed)
        all_weights = []
        for layer in self.encoder:
            x, weights = layer(x, key_mask, need_weights)
            all_weights.append(weights)
        memory = self.encoder_norm(x)
        return (memory, all_weights) if need_weights else memory

    def new_cache(self, memory: Tensor, src_pad_mask: Tensor, capacity: int, rows: Optional[int] = None,
                  allocate: Optional[Callable[[int, Tensor], Tensor]] = None) -> DecoderCache:
        """Compute every layer's cross-attention keys/values once; preallocate self-attention
        keys/values for `capacity` steps of `rows` decoder rows (default: one per sentence; a beam
        search asks for sentences x beams). allocate(n, like) may lend a flat tensor of at least
        n elements of like's dtype and device (memory reused across batches)."""
        cross_kv = torch.stack([layer.cross_attn.memory_kv(memory) for layer in self.decoder])
        L, _, B, H, _, d_k = cross_kv.shape
        shape = (L, B if rows is None else rows, capacity, 2, H, d_k)
        if allocate is None:
            self_kv = cross_kv.new_empty(shape)
        else:
            size = math.prod(shape)
            self_kv = allocate(size, cross_kv)[:size].view(shape)
        return DecoderCache(self_kv, cross_kv, src_pad_mask, 0)

    def decode(self, tgt_in: Tensor, memory: Optional[Tensor], src_pad_mask: Tensor,
               cache: Optional[DecoderCache] = None, need_weights: bool = False):
        """tgt_in [B,T] -> logits [B,T,V] (pre-softmax).

        Without a cache: teacher forcing over the whole prefix, causal self-attention.
        With a cache: tgt_in holds only the new tokens, at positions cache.length onwards;
        they attend to every cached step, and the cache advances by T.
        With need_weights also {"dec": [B,H,T,T_keys] per layer, "cross": [B,H,T,S] per layer}.
        (With a cache, `memory` is not read, may be None: its keys/values are in the cache.)
        """
        T = tgt_in.size(1)
        start = cache.length if cache is not None else 0
        if cache is not None and start + T > cache.capacity:
            raise ValueError(f"decoder cache full: capacity {cache.capacity}, need {start + T}")
        cross_mask = key_padding_mask(src_pad_mask)
        self_mask, is_causal = self._self_attention_mask(T, start, cache is not None, tgt_in.device)
        x = self.embed(tgt_in, self.tgt_embed, start)
        dec_weights, cross_weights = [], []
        for i, layer in enumerate(self.decoder):
            memory_kv = cache.cross_kv[i] if cache is not None else layer.cross_attn.memory_kv(memory)
            kv_cache = cache.self_kv[i] if cache is not None else None
            x, self_w, cross_w = layer(x, memory_kv, cross_mask, self_mask, is_causal,
                                       need_weights, kv_cache, start)
            dec_weights.append(self_w)
            cross_weights.append(cross_w)
        if cache is not None:
            cache.length = start + T
        logits = self.out_proj(self.decoder_norm(x))
        return (logits, {"dec": dec_weights, "cross": cross_weights}) if need_weights else logits

    @staticmethod
    def _self_attention_mask(T: int, start: int, cached: bool, device):
        """(mask, is_causal) for decoder self-attention of T new queries at positions start.."""
        if not cached:  # plain causal mask; the fused kernel skips the masked triangle itself
            return None, True
        if T == 1:  # one new token may see every cached step: nothing to mask
            return None, False
        # several new tokens after `start` cached ones: query j sees keys <= start + j
        return torch.ones(T, start + T, dtype=torch.bool, device=device).tril(diagonal=start), False

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """Teacher forcing (training): src [B,S], tgt_in [B,T] -> logits [B,T,V]."""
        memory = self.encode(src)
        return self.decode(tgt_in, memory, src == self.cfg.pad_id)
