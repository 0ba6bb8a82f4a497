"""The key/value cache for incremental decoding: one new token per step, no recomputed prefix.

At each step a decoder layer's self-attention needs the keys and values of every earlier step,
and its cross-attention those of the encoder memory, which never change. `new_cache` computes
the latter once and preallocates room for the former; `model.decode(tokens, None, pad, cache)`
then hands each layer its own `LayerCache`, which stores the step's keys and values and gives
back all of them. `DecoderCache.select` reorders rows between steps (beam search, finished
sentences leaving), copying only the rows that move.

Inference only: run under torch.inference_mode() or torch.no_grad().
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import Tensor

from .model import Seq2SeqTransformer, key_padding_mask


class LayerCache:
    """One decoder layer's part of a DecoderCache: views into its buffers, made when the buffers
    change (new_cache, select), not per step.

    self_kv   [B,capacity,2,H,d_k]  self-attention keys/values of the steps so far
    cross_kv  [2,B',H,S,d_k]        cross-attention keys/values of the memory
    length                          steps cached: where the next step's keys/values go
    """

    __slots__ = ("self_kv", "cross_kv", "length")

    def __init__(self, self_kv: Tensor, cross_kv: Tensor, length: int):
        self.self_kv, self.cross_kv, self.length = self_kv, cross_kv, length

    def append(self, kv: Tensor) -> Tensor:
        """kv [B,T,2*D]: the new steps' keys and values, as the fused projection gives them.
        Stores them at `length` and returns [2,B,H,length,d_k]: keys and values of every step
        so far, the new ones included (strided views of the buffer)."""
        B, T, _ = kv.shape
        end = self.length + T
        if end > self.self_kv.size(1):
            raise ValueError(f"decoder cache full: capacity {self.self_kv.size(1)}, need {end}")
        # a step's keys and values are one contiguous row of the projection: one write per row
        self.self_kv[:, self.length:end] = kv.view(B, T, *self.self_kv.shape[2:])
        self.length = end
        return self.self_kv[:, :end].permute(2, 0, 3, 1, 4)


@dataclass(eq=False)
class DecoderCache:
    """Every layer's keys and values, stacked in two tensors; `layers` views them per layer.

    self_kv   [L,B,capacity,2,H,d_k]  decoder self-attention keys/values, filled up to `length`
                                      in place, one step at a time (no torch.cat per step); a
                                      row's steps lie together, so writing a step and moving a
                                      row are contiguous copies
    cross_kv  [L,2,B',H,S,d_k]        cross-attention keys/values, computed once from the memory;
                                      B' = B, or one row per sentence when B = B' x beams
    src_pad_mask [B',S]               True = source padding
    src_mask     [B',1,1,S]           model.key_padding_mask of it, made when the rows change,
                                      not at every step
    """

    self_kv: Tensor
    cross_kv: Tensor
    src_pad_mask: Tensor
    layers: list[LayerCache] = field(init=False)
    src_mask: Tensor = field(init=False)

    def __post_init__(self):
        self.layers = self._layer_views(0)
        self.src_mask = key_padding_mask(self.src_pad_mask)

    def _layer_views(self, length: int) -> list[LayerCache]:
        return [LayerCache(s, c, length) for s, c in zip(self.self_kv, self.cross_kv)]

    @property
    def length(self) -> int:
        """Steps already decoded: the next token's position (every layer holds the same steps)."""
        return self.layers[0].length

    @property
    def capacity(self) -> int:
        return self.self_kv.size(2)

    @torch.no_grad()
    def select(self, index: torch.LongTensor, cross_index: Optional[torch.LongTensor] = None) -> None:
        """Keep/reorder batch rows (beam reordering, dropping finished sentences).

        cross_index: the rows of cross_kv and src_pad_mask to keep, where they differ from
        `index`: a beam search keeps one row per sentence, which its beams share (see
        model.CrossAttention), so they move only when sentences leave.
        """
        cross_index = index if cross_index is None else cross_index
        length = self.length
        self.self_kv = _move_rows(self.self_kv, index, length)
        self.cross_kv = _take_rows(self.cross_kv, cross_index)
        self.src_pad_mask = self.src_pad_mask.index_select(0, cross_index)
        self.src_mask = self.src_mask.index_select(0, cross_index)
        self.layers = self._layer_views(length)

    @torch.no_grad()
    def select_beams(self, index: torch.LongTensor) -> None:
        """select(index, cross_index) where the sentences stay as they are, in the same order
        (cross_index would be 0..B'-1): a beam search step in which no sentence ended moves
        self-attention rows only."""
        length = self.length
        self.self_kv = _move_rows(self.self_kv, index, length)
        self.layers = self._layer_views(length)


def new_cache(model: Seq2SeqTransformer, memory: Tensor, src_pad_mask: Tensor, capacity: int,
              rows: Optional[int] = None,
              allocate: Optional[Callable[[int, Tensor], Tensor]] = None) -> DecoderCache:
    """Compute every layer's cross-attention keys/values once; preallocate self-attention
    keys/values for `capacity` steps of `rows` decoder rows (default: one per sentence; a beam
    search asks for sentences x beams). allocate(n, like) may lend a flat tensor of at least
    n elements of like's dtype and device (memory reused across batches)."""
    cross_kv = torch.stack([layer.cross_attn.memory_kv(memory) for layer in model.decoder])
    L, _, B, H, _, d_k = cross_kv.shape
    shape = (L, B if rows is None else rows, capacity, 2, H, d_k)
    if allocate is None:
        self_kv = cross_kv.new_empty(shape)
    else:
        size = math.prod(shape)
        self_kv = allocate(size, cross_kv)[:size].view(shape)
    return DecoderCache(self_kv, cross_kv, src_pad_mask)


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
