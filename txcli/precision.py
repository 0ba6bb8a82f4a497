"""Which arithmetic to run in: fp32, bf16 autocast or fp16 autocast, and whether bf16 pays off.

bf16 is only fast where the hardware multiplies in it: CUDA GPUs that support it, and CPUs with
AVX512-BF16 or AMX. Elsewhere torch's CPU bf16 matrix product falls back to a slow reference
loop, many times slower than fp32, so `auto` picks bf16 only where it is fast, and an explicit
bf16 there gets a warning.

`autocast` is the one mixed-precision context, for training and decoding alike.
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch

TRAIN_PRECISIONS = ("auto", "fp32", "bf16", "fp16")  # decoding's set: options.DECODE_PRECISIONS
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # the rest (fp32, int8) run as they are


def bf16_is_fast(device: torch.device) -> bool:
    """True where bf16 matrix products run in hardware on `device`."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(cpu, probe, None)  # private, but the only way torch tells; absent on old versions
        if check is not None and check():
            return True
    return False


def resolve_precision(requested: str, device: torch.device) -> tuple[str, Optional[str]]:
    """(precision to run in, a warning or None). `auto`: bf16 where it is fast, else fp32."""
    if requested not in TRAIN_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}, got {requested!r}")
    fast = bf16_is_fast(device)
    if requested == "auto":
        return ("bf16" if fast else "fp32"), None
    if requested == "bf16" and not fast:
        missing = "AVX512-BF16 or AMX" if device.type == "cpu" else "bf16 support"
        return "bf16", (f"bf16 on this {device.type} has no hardware support (no {missing}): it runs "
                        "many times slower than fp32 here; precision auto or fp32 would be faster")
    return requested, None


@contextlib.contextmanager
def autocast(device: torch.device, precision: str):
    """Mixed precision for a forward pass, in training (the backward follows the forward's
    choices) and in decoding: bf16 or fp16 autocast; fp32 and int8 run as they are."""
    if precision not in AUTOCAST_DTYPES:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision]), _attention_kernel(device, precision):
        yield


def _attention_kernel(device: torch.device, precision: str):
    """On CPU in bf16 the fused flash-attention kernel's backward is slower than the plain
    matmul-softmax-matmul path for sentence-length sequences (in fp32 it is the other way round:
    bench/train_sdpa_kernels.py), so bf16 on CPU takes the plain path. Decoding runs under it
    too: its outputs are the same with either kernel."""
    if device.type == "cpu" and precision == "bf16":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([SDPBackend.MATH])
    return contextlib.nullcontext()
