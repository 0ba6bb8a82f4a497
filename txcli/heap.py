"""How the C heap hands memory back to the system, for training and decoding processes.

A training step allocates and frees the same large activation tensors every step (at the
reference shape a [4096, 1024] float32 feed-forward activation is 16 MB, the logits 70 MB).
glibc serves such blocks with mmap and unmaps them on free, or trims the heap top back to the
system, so the next step touches fresh pages again: tens of thousands of page faults a step,
and a measurable share of its time (the figures: README's performance notes,
bench/train_throughput.py --default-heap). Keeping freed blocks in the heap makes the steps reuse
the same pages; the peak memory is the same, it is just not given back between steps.
Decoding is the same on a smaller scale, many more times: every beam-search step allocates its
logits and activations, every batch its key/value cache, and a server decodes batch after
batch (commands/run.open_for_decoding sets it for every decoding command).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3  # glibc's <malloc.h>
MMAP_THRESHOLD = 1 << 30  # blocks below 1 GiB come from the heap, not from mmap
TRIM_THRESHOLD = 1 << 30  # give the heap top back only when 1 GiB of it is free
TOP_PAD = 64 << 20  # grow the heap 64 MiB beyond each request


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as above; False (and nothing changed) on another C library."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_TOP_PAD, TOP_PAD)))
