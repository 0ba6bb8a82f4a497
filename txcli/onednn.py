"""How many oneDNN primitives the process keeps; must be set before the first bf16 matrix product.

On a CPU with bf16 instructions, torch runs bf16 matrix products through oneDNN. For each problem
shape it builds a "primitive" that holds buffers of its own, and keeps it twice over: in
oneDNN's primitive cache (ONEDNN_PRIMITIVE_CACHE_CAPACITY, 1,024 by default) and in the cache of
ideep, torch's layer over oneDNN (LRU_CACHE_CAPACITY, also 1,024). Training batches come in
hundreds of shapes (token-budget batches of every length), so a bf16 run grew by megabytes for
each new shape for as long as new shapes came: gigabytes over a real run, where fp32 (MKL, no
such caches) stays flat. Building a primitive afresh costs less than what the caches cost in
memory; the figures: README's performance table (bench/train_run.py). ideep's capacity is 1, not
0: torch 2.13 crashes with 0. fp32 products do not go through oneDNN here.
"""

from __future__ import annotations

import os

CACHE_VARIABLES = {
    "ONEDNN_PRIMITIVE_CACHE_CAPACITY": "0",  # oneDNN keeps no primitive
    "LRU_CACHE_CAPACITY": "1",  # ideep keeps the last one (0 crashes it)
}


def small_primitive_caches() -> None:
    """The caches as above; a capacity the user set is left alone. Both libraries read their
    variable when they build their first primitive, so this works after `import torch` too, as
    long as no bf16 product has run yet."""
    for name, value in CACHE_VARIABLES.items():
        os.environ.setdefault(name, value)
