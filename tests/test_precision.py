"""precision auto picks bf16 only where the hardware runs it fast; bf16 elsewhere is warned about;
OpenMP threads spin briefly before they sleep."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from txcli import precision
from txcli.commands.train import train
from txcli.commands.run import open_for_decoding
from txcli.commands.run import run_decoding as resolve_decoding
from txcli.options import DecodeOptions
from txcli.schema import load_recipe

from .conftest import run_tx

CPU = torch.device("cpu")


@pytest.mark.parametrize("fast", [True, False])
def test_auto_is_bf16_exactly_where_bf16_is_fast(monkeypatch, fast):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: fast)
    assert precision.resolve_precision("auto", CPU) == ("bf16" if fast else "fp32", None)
    assert precision.resolve_precision("fp32", CPU) == ("fp32", None)
    chosen, warning = precision.resolve_precision("bf16", CPU)
    assert chosen == "bf16"  # an explicit choice is kept ...
    assert (warning is None) == fast  # ... with a warning where it is slow
    if not fast:
        assert "slower than fp32" in warning


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_precision("fp8", CPU)


def test_bf16_is_fast_agrees_with_the_cpu_flags():
    flags = torch._C._cpu._get_cpu_capability() if hasattr(torch._C._cpu, "_get_cpu_capability") else None
    if not isinstance(flags, dict) or "avx512_bf16" not in flags:
        pytest.skip("this torch does not report CPU flags")
    assert precision.bf16_is_fast(CPU) == bool(flags["avx512_bf16"] or flags.get("amx_bf16") or flags.get("amx_tile"))


def test_training_with_auto_runs_in_the_resolved_precision(tiny_recipe: Path, monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    recipe = load_recipe(tiny_recipe, ["train.threads=1", "train.precision=auto", "train.max_steps=2",
                                       "train.eval_every=2"])
    train(recipe)
    events = [json.loads(line) for line in (recipe.run_dir / "metrics.jsonl").read_text().splitlines()]
    start = next(e for e in events if e["event"] == "start")
    assert start["precision"] == "fp32"
    saved = (recipe.run_dir / "recipe.yaml").read_text()
    assert "precision: auto" in saved  # the recipe as written: a resume elsewhere resolves again


def test_slow_bf16_training_says_so(tiny_recipe: Path, monkeypatch):
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    recipe = load_recipe(tiny_recipe, ["train.threads=1", "train.precision=bf16", "train.max_steps=2",
                                       "train.eval_every=2"])
    train(recipe)
    assert "train.precision bf16 on this cpu has no hardware support" in (recipe.run_dir / "train.log").read_text()


def test_translate_precision_auto_and_the_bf16_warning(tiny_run: Path, monkeypatch):
    run = open_for_decoding(tiny_run, "cpu")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: False)
    assert resolve_decoding(run, DecodeOptions(precision="auto")).precision == "fp32"
    slow = resolve_decoding(run, DecodeOptions(precision="bf16"))
    assert slow.precision == "bf16" and slow.warning.startswith("--precision bf16")
    monkeypatch.setattr(precision, "bf16_is_fast", lambda device: True)
    fast = resolve_decoding(run, DecodeOptions(precision="auto"))
    assert fast.precision == "bf16" and fast.warning is None


def test_translate_cli_warns_once_about_slow_bf16(tiny_run: Path):
    result = run_tx("translate", str(tiny_run), "--precision", "bf16", "--beam", "1", input="a b\n")
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 1
    warned = [line for line in result.stderr.splitlines() if "no hardware support" in line]
    assert len(warned) == (0 if precision.bf16_is_fast(CPU) else 1)


# --------------------------------------------------------------------------- OpenMP waiting


def test_short_spin_waits_unless_the_user_chose_a_policy(monkeypatch):
    from txcli.openmp import short_spin_waits

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(name, raising=False)
    short_spin_waits()
    assert os.environ["GOMP_SPINCOUNT"] == "3000" and os.environ["KMP_BLOCKTIME"] == "1"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.delenv("KMP_BLOCKTIME")
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    short_spin_waits()
    assert "GOMP_SPINCOUNT" not in os.environ and "KMP_BLOCKTIME" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "50")
    monkeypatch.delenv("OMP_WAIT_POLICY")
    short_spin_waits()
    assert os.environ["GOMP_SPINCOUNT"] == "50"  # a spin count the user set stays


# --------------------------------------------------------------------------- oneDNN primitives


def test_process_settings_keep_few_onednn_primitives_unless_the_user_chose_a_capacity(monkeypatch):
    from txcli.process import apply_process_settings

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    undo = apply_process_settings(None)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0" and os.environ["LRU_CACHE_CAPACITY"] == "1"
    undo()
    assert "ONEDNN_PRIMITIVE_CACHE_CAPACITY" not in os.environ and "LRU_CACHE_CAPACITY" not in os.environ
    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "64")
    apply_process_settings(None)()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "64"  # the user's own stays


def test_decoding_keeps_few_onednn_primitives_too(monkeypatch, tiny_run):
    from txcli.commands.run import open_for_decoding

    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        monkeypatch.delenv(name, raising=False)
    open_for_decoding(tiny_run)
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "0" and os.environ["LRU_CACHE_CAPACITY"] == "1"


# bf16 training steps over 61 batch shapes, as token-budget batches come; prints the RSS growth (MB)
# from the first shapes to the last.
SHAPES_PROBE = """
import sys
if sys.argv[1] == "tx":
    from txcli.process import apply_process_settings
    apply_process_settings(1)
import torch
torch.set_num_threads(1)
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096 / 1e6
model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 256))
for i, rows in enumerate([1480] * 6 + list(range(1472, 992, -8))):  # the largest first: then no new block
                                                                    # is larger than those the heap keeps
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(torch.randn(rows, 256)).float().square().mean()
    loss.backward()
    if i == 5:
        start = rss()
print(rss() - start)
"""


def test_bf16_memory_stays_flat_over_many_batch_shapes():
    """The growth that onednn.py stops: with the default caches every new shape keeps its
    primitives; under tx's process settings the footprint stays where it was."""
    if not (sys.platform.startswith("linux") and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        pytest.skip("bf16 products do not go through oneDNN on this CPU")

    def growth(mode: str) -> float:
        env = {k: v for k, v in os.environ.items() if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
        result = subprocess.run([sys.executable, "-c", SHAPES_PROBE, mode], capture_output=True, text=True,
                                env=env, check=True, timeout=120)
        return float(result.stdout)

    default = growth("default")
    if default < 50:
        pytest.skip(f"oneDNN's default cache grew only {default:.0f} MB here: nothing to stop")
    assert growth("tx") < min(20, default / 4)


# --------------------------------------------------------------------------- heap


HEAP_PROBE = """
import resource, sys, torch
from txcli.heap import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
def faults(n):  # a training step's pattern: the same large block allocated, filled, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        x = torch.ones(10 << 20)  # 40 MB, above glibc's largest self-tuned mmap threshold (32 MB)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(15)  # warm up: OpenMP's threads, and the heap grows to its working size
print(faults(10))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the tuning is glibc's mallopt")
def test_kept_heap_reuses_the_pages_of_freed_blocks():
    """By default every 40 MB block is mmapped afresh and faults its 10,240 pages in again; with
    keep_freed_memory, once the heap has grown, the blocks reuse its pages."""
    def faults(mode: str) -> int:
        out = subprocess.run([sys.executable, "-c", HEAP_PROBE, mode], capture_output=True, text=True, check=True)
        return int(out.stdout)

    assert faults("default") > 10 * 10_000
    assert faults("keep") < 1_000


def test_the_reported_peak_memory_never_goes_down(monkeypatch):
    """The kernel's high-water mark lags what /proc shows; a log line's peak must still never be
    below an earlier line's (it was seen: 735.9 then 735.8 MB)."""
    import resource
    from types import SimpleNamespace

    from txcli import process
    from txcli.process import usage

    monkeypatch.setattr(process, "_highest_seen", 0.0)  # and back afterwards: other tests log peaks too
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=10**8))  # KiB
    first = usage().peak_rss_mb
    assert first >= 10**8 * 1024 / 1e6
    monkeypatch.setattr(resource, "getrusage", lambda who: SimpleNamespace(ru_maxrss=1))  # a lagging mark
    assert usage().peak_rss_mb >= first
