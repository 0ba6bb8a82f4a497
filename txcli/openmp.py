"""How OpenMP's idle threads wait; must run before torch loads its OpenMP runtime.

Between two parallel regions libgomp's threads spin (by default up to 300,000 polls), then sleep.
Spinning lets a training step's many small back-to-back kernels start at once, so training is
faster with spinning threads than with threads that sleep at once (OMP_WAIT_POLICY=PASSIVE). But
on a CPU shared with other processes long spins steal the cores those processes need, and training
collapses. A short spin keeps nearly all of the speed and gives the core up within microseconds.
The figures: README's performance table (bench/train_throughput.py).
"""

from __future__ import annotations

import os

SPIN_POLLS = "3000"  # libgomp polls before sleeping
BLOCK_MS = "1"  # the same for LLVM/Intel OpenMP (macOS, some builds): ms to spin before sleeping
OPENMP_VARIABLES = ("GOMP_SPINCOUNT", "KMP_BLOCKTIME")  # what short_spin_waits may set


def short_spin_waits() -> None:
    """Idle OpenMP threads spin briefly, then sleep; a policy the user set is left alone."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_POLLS)
    os.environ.setdefault("KMP_BLOCKTIME", BLOCK_MS)
