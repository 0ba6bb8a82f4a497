"""tx train and tx average as users run them: subprocesses, signals, torchrun with two processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch

from txcli.checkpoint import load_model_state, load_tensors

from .conftest import ROOT, run_tx

ONE_THREAD = ["--set", "train.threads=1"]


def _events(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_sigint_saves_a_checkpoint_and_the_run_resumes_to_the_end(tiny_recipe: Path):
    run_dir = tiny_recipe.parent / "run"
    cmd = [sys.executable, "-m", "txcli", "train", str(tiny_recipe), *ONE_THREAD,
           "--set", "train.max_steps=100000", "--set", "train.log_every=1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(e["event"] == "log" and e["step"] >= 3 for e in _events(run_dir)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "stopped by SIGINT" in stderr and "--resume" in stderr
    stopped = json.loads((run_dir / "checkpoints/last/state.json").read_text())["step"]
    assert stopped >= 3 and _events(run_dir)[-1]["reason"] == "interrupted"

    result = run_tx("train", str(tiny_recipe), *ONE_THREAD, "--set", f"train.max_steps={stopped + 3}", "--resume")
    assert result.returncode == 0, result.stderr
    assert f"resumed at step {stopped}" in result.stderr  # plain lines when not on a terminal
    end = _events(run_dir)[-1]
    assert end["event"] == "end" and end["reason"] == "max_steps" and end["step"] == stopped + 3


DDP_SCRIPT = """
import os, sys
from txcli.schema import load_recipe
from txcli.commands.train import train
from txcli.checkpoint import save_tensors
overrides = ["train.max_steps=6", "train.eval_every=3", "train.log_every=1", "train.accum_steps=2"]
result = train(load_recipe(sys.argv[1], overrides))
save_tensors(os.path.join(sys.argv[2], f"rank{os.environ['RANK']}.safetensors"), result.model.state_dict())
"""


def test_two_gloo_processes_end_with_identical_weights_and_a_complete_run_dir(tiny_recipe: Path, tmp_path: Path):
    script = tmp_path / "ddp_train.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                             str(script), str(tiny_recipe), str(tmp_path)],
                            capture_output=True, text=True, env=env, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, _ = load_tensors(tmp_path / "rank0.safetensors")
    rank1, _ = load_tensors(tmp_path / "rank1.safetensors")
    _, saved, _ = load_model_state(tiny_recipe.parent / "run/checkpoints/last/model.safetensors")
    for name in rank0:
        assert torch.equal(rank0[name], rank1[name]), name
        assert torch.equal(rank0[name], saved[name]), name
    run_dir = tiny_recipe.parent / "run"
    for name in ("recipe.yaml", "tokenizer.json", "model.safetensors", "train.log",
                 "checkpoints/last/trainer.safetensors", "checkpoints/step-000006/model.safetensors"):
        assert (run_dir / name).exists(), name
    events = _events(run_dir)
    assert events[0]["world_size"] == 2
    assert [e["step"] for e in events if e["event"] == "log"] == [1, 2, 3, 4, 5, 6]  # rank 0 alone writes
    state = json.loads((run_dir / "checkpoints/last/state.json").read_text())
    # 6 steps x 2 ranks x 2 accumulated batches, each rank on its own: 24 = epoch 1 + the rest
    epoch_1 = next(e for e in events if e["event"] == "epoch")
    assert epoch_1["batches"] < 24 and epoch_1["corpora"]["train"]["read"] == 200
    assert state["train_state"]["epoch"] == 2 and state["train_state"]["batches_done"] == 24 - epoch_1["batches"]


NODE_SCRIPT = """
import json, os, sys
from txcli import corpora, training
from txcli.schema import load_recipe
from txcli.commands.train import train

reads, saves = [], []
read = corpora.CorpusIndex.read
corpora.CorpusIndex.read = lambda self, index: reads.extend(int(i) for i in index) or read(self, index)
save = training.ckpt.save_training_checkpoint
training.ckpt.save_training_checkpoint = lambda *a, **k: saves.append(1) or save(*a, **k)
recipe_path, run_dir, steps, resume, out = sys.argv[1:6]
overrides = [f"run_dir={run_dir}", f"train.max_steps={steps}", "train.eval_every=4", "train.log_every=1",
             "train.pool_size=64", "train.threads=1"]
train(load_recipe(recipe_path, overrides), resume=resume == "1")
with open(os.path.join(out, f"rank{os.environ['RANK']}.json"), "w") as f:
    json.dump({"reads": reads, "saves": len(saves)}, f)
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_nodes(script: Path, recipe: Path, run_dir: Path, steps: int, resume: bool, out: Path) -> list[dict]:
    """One torchrun per node, two nodes on loopback, one process each."""
    out.mkdir()
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1",
                               "--node_rank", str(node), "--master_addr", "127.0.0.1", "--master_port", port,
                               str(script), str(recipe), str(run_dir), str(steps), "1" if resume else "0", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for node in (0, 1)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=240)
        assert proc.returncode == 0, stderr[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


def test_two_nodes_on_loopback_read_their_own_shares_and_resume_exactly(tiny_recipe: Path, tmp_path: Path):
    script = tmp_path / "node_train.py"
    script.write_text(textwrap.dedent(NODE_SCRIPT))
    unbroken = _two_nodes(script, tiny_recipe, tmp_path / "a", 8, False, tmp_path / "out-a")
    reads = [set(r["reads"]) for r in unbroken]
    assert reads[0] and reads[1] and not reads[0] & reads[1]  # each rank read its own pairs (200 in 4 pools)
    assert [r["saves"] for r in unbroken] == [3, 0]  # checkpoints/last at steps 4, 8 and the end, by rank 0 alone
    _two_nodes(script, tiny_recipe, tmp_path / "b", 4, False, tmp_path / "out-b1")
    resumed = _two_nodes(script, tiny_recipe, tmp_path / "b", 8, True, tmp_path / "out-b2")
    assert [r["saves"] for r in resumed] == [2, 0]
    losses = [{e["step"]: e["loss"] for e in _events(tmp_path / run) if e["event"] == "log"} for run in "ab"]
    assert sorted(losses[1]) == list(range(1, 9))
    for step in range(5, 9):
        assert abs(losses[1][step] - losses[0][step]) <= 1e-6 * abs(losses[0][step]), step
    _, a, _ = load_model_state(tmp_path / "a/checkpoints/last/model.safetensors")
    _, b, _ = load_model_state(tmp_path / "b/checkpoints/last/model.safetensors")
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-7)


def test_average_cli_errors_are_one_line(tiny_run: Path):
    result = run_tx("average", str(tiny_run), "--best", "2", "--last", "2")
    assert result.returncode == 2 and "exactly one of" in result.stderr
    result = run_tx("average", str(tiny_run), "--last", "2")
    assert result.returncode == 2 and "0 step checkpoint(s), 2 asked for" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
