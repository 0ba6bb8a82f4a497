"""Decoding over the model's `encode` and `decode` only.

Sentences start from <s> and stop at </s>.
"""

from __future__ import annotations

import torch

from .model import Seq2SeqTransformer


@torch.inference_mode()
def greedy_search(model: Seq2SeqTransformer, src: torch.Tensor, max_len: int, bos_id: int, eos_id: int) -> list[list[int]]:
    """Batched greedy decoding with the key/value cache. src [B,S] (padded with pad_id).
    Returns, per sentence, the output ids without <s> and </s>."""
    B = src.size(0)
    src_pad = src == model.cfg.pad_id
    memory = model.encode(src)
    cache = model.new_cache(memory, src_pad, capacity=max_len + 1)
    tokens = torch.full((B, 1), bos_id, dtype=torch.long, device=src.device)
    out = torch.empty(B, 0, dtype=torch.long, device=src.device)
    done = torch.zeros(B, dtype=torch.bool, device=src.device)
    for _ in range(max_len):
        logits = model.decode(tokens, memory, src_pad, cache)
        next_tok = logits[:, -1].argmax(-1).masked_fill(done, eos_id)
        out = torch.cat([out, next_tok[:, None]], dim=1)
        done |= next_tok == eos_id
        if bool(done.all()):
            break
        tokens = next_tok[:, None]
    result = []
    for row in out.tolist():
        result.append(row[: row.index(eos_id)] if eos_id in row else row)
    return result
