"""How OpenMP's idle threads wait; must run before torch loads its OpenMP runtime.

Between two parallel regions libgomp's threads spin (by default up to 300,000 polls), then sleep.
Spinning all the time lets a training step's many small back-to-back kernels start at once; on an
idle 2-core machine the demo trains 19% faster than with threads that sleep at once
(OMP_WAIT_POLICY=PASSIVE: 3,575 against 4,269 target tokens/s, bench/train_throughput.py). But on a
CPU shared with other processes long spins steal the cores those processes need, and training
collapses (a tiny run took 74 s spinning against 4.5 s passive). A short spin keeps nearly all of
the speed (4,259 tokens/s) and gives the core up within microseconds.
"""

from __future__ import annotations

import os

SPIN_POLLS = "3000"  # libgomp polls before sleeping
BLOCK_MS = "1"  # the same for LLVM/Intel OpenMP (macOS, some builds): ms to spin before sleeping


def short_spin_waits() -> None:
    """Idle OpenMP threads spin briefly, then sleep; a policy the user set is left alone."""
    if "OMP_WAIT_POLICY" in os.environ:
        return
    os.environ.setdefault("GOMP_SPINCOUNT", SPIN_POLLS)
    os.environ.setdefault("KMP_BLOCKTIME", BLOCK_MS)
