"""The process-wide settings a training process runs under, made by one function that every
entry into training calls (`tx train`, `commands.train.train` from Python, each torchrun
worker): torch's thread count, how OpenMP's idle threads wait (openmp.py), how many oneDNN
primitives are kept (onednn.py) and how the C heap hands memory back (heap.py). Imports no torch
at module level: the CLI calls it before torch loads OpenMP, which reads its wait policy once,
when it loads."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .heap import keep_freed_memory
from .onednn import CACHE_VARIABLES, small_primitive_caches
from .openmp import OPENMP_VARIABLES, short_spin_waits


def set_threads(threads: Optional[int]) -> Callable[[], None]:
    """torch's intra-op thread count (None: left as it is); returns the undo."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)


def apply_process_settings(threads: Optional[int]) -> Callable[[], None]:
    """Short OpenMP spins (if torch has not loaded OpenMP yet, this process's; else its children's),
    oneDNN primitives not kept (bf16 training's memory stays flat over many batch shapes), glibc
    keeping freed memory for the next step (heap.py), and torch's threads. Returns the undo:
    threads and environment back as they were. glibc's settings stay: it cannot report the values
    they replaced, and they change no result, only when memory goes back to the system. Calling it
    again is harmless (the CLI calls it before torch loads; commands.train.train again)."""
    environ = {name: os.environ.get(name) for name in (*OPENMP_VARIABLES, *CACHE_VARIABLES)}
    short_spin_waits()
    small_primitive_caches()
    keep_freed_memory()
    undo_threads = set_threads(threads)

    def undo() -> None:
        undo_threads()
        for name, value in environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return undo


@dataclass(frozen=True)
class Usage:
    """What this process holds and has spent, read from the OS (no torch): resident memory now and
    at its peak, in MB, and CPU seconds of all its threads beside the wall clock."""

    rss_mb: Optional[float]
    peak_rss_mb: Optional[float]
    cpu_s: float
    wall_s: float


_highest_seen = 0.0  # the largest peak usage() has reported in this process


def usage() -> Usage:
    global _highest_seen
    rss = peak = None
    try:  # Linux: resident pages now
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6  # KiB on Linux
    except (ImportError, OSError):
        pass
    if rss is not None and peak is not None:
        # the kernel's high-water mark is updated lazily: it can lag what statm showed, now or at an
        # earlier call, and a peak must never go down between two log lines
        peak = _highest_seen = max(peak, rss, _highest_seen)
    return Usage(rss, peak, time.process_time(), time.monotonic())
