"""int8 decoding on the CPU: a copy of the model whose Linear layers multiply in int8.

Dynamic quantization: weights are stored as int8 with one scale per output row (per channel:
quantize_dynamic's default is one scale per tensor, and over an 8k-row output projection the
rows with the largest weights then set the step for every row, which cost BLEU on a real
vocabulary; bench/int8_quality.py compares the two), activations are quantized per batch on the fly, products accumulate in int32 (fbgemm kernels). Every Linear the
model calls goes through its module's forward (the fused qkv/kv projections, W_O, the
feed-forward, and the output projection over the vocabulary, which at an 8k vocabulary is the
single largest product of a decoding step); embeddings and layer norms stay fp32.

Why torch.ao.quantization.quantize_dynamic although torch marks it deprecated: on CPU it decodes
faster than fp32, while torchao's Int8DynamicActivationInt8WeightConfig (its replacement) was
slower than fp32 and needs an extra package (bench/int8_backends.py measures the three). The
choice lives here only; callers ask for `int8_copy(model)`.
"""

from __future__ import annotations

import copy
import warnings

import torch
import torch.nn as nn


WEIGHT_SCALES = ("per_channel", "per_tensor")  # per_tensor: quantize_dynamic's default, for comparison


def int8_copy(model: nn.Module, weight_scales: str = "per_channel") -> nn.Module:
    """An inference copy of `model` with int8 Linear layers; `model` itself is left as it was
    (fp32, tied weights still tied). A Linear whose weight is tied to an embedding gets its own
    int8 copy of that weight; the embedding stays fp32."""
    if weight_scales not in WEIGHT_SCALES:
        raise ValueError(f"weight_scales {weight_scales!r}: expected one of {WEIGHT_SCALES}")
    clone = copy.deepcopy(model).eval()  # deepcopy keeps the clone's own ties; the original is untouched
    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the deprecation notice of torch.ao.quantization
        from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

        qconfig = per_channel_dynamic_qconfig if weight_scales == "per_channel" else default_dynamic_qconfig
        return quantize_dynamic(clone, {nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
