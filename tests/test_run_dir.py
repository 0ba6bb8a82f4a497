from __future__ import annotations

from pathlib import Path

import pytest
import torch

from txcli.checkpoint import MODEL_FILE, load_tensors, save_tensors
from txcli.commands.run import open_run
from txcli.errors import TxError
from txcli.search import greedy_search
from txcli.tokenizer import BOS_ID, EOS_ID


def test_open_run_restores_the_same_model(tiny_run: Path):
    run = open_run(tiny_run, device="cpu")
    again = open_run(tiny_run, device="cpu")
    src = torch.tensor([[5, 6, 7, EOS_ID]])
    tgt = torch.tensor([[BOS_ID, 8, 9]])
    assert torch.equal(run.model(src, tgt), again.model(src, tgt))
    # tied weights stay tied after loading
    assert run.model.out_proj.weight is run.model.tgt_embed.weight
    out = greedy_search(run.model, src, max_len=5, bos_id=BOS_ID, eos_id=EOS_ID)
    assert len(out) == 1 and len(out[0]) <= 5


def test_truncated_weights_are_a_clear_error(tiny_run: Path):
    path = tiny_run / MODEL_FILE
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(TxError, match="damaged or truncated"):
        open_run(tiny_run, device="cpu")


def test_missing_run_dir(tmp_path: Path):
    with pytest.raises(TxError, match="no such run directory"):
        open_run(tmp_path / "nope")


def test_shared_tensors_are_stored_once(tmp_path: Path):
    a = torch.randn(3, 4)
    save_tensors(tmp_path / "t.safetensors", {"a": a, "b": a, "c": torch.ones(2)})
    loaded, meta = load_tensors(tmp_path / "t.safetensors")
    assert torch.equal(loaded["a"], a) and loaded["b"] is loaded["a"] and "tx.aliases" not in meta


def test_interrupted_writes_are_removed_and_nothing_else(tmp_path: Path):
    """What `kill -9` during a checkpoint save leaves (a .step-NNNNNN.XXXX.tmp directory, a
    half-written model file) goes; complete checkpoints, the .old copy a crash between two renames
    keeps, and the user's own files stay."""
    from txcli.checkpoint import remove_interrupted_writes

    ckpts = tmp_path / "checkpoints"
    (ckpts / ".step-000460.k2j3.tmp").mkdir(parents=True)
    (ckpts / ".step-000460.k2j3.tmp" / "model.safetensors").write_bytes(b"half")
    (ckpts / "step-000400").mkdir()
    (ckpts / ".last.old").mkdir()
    (tmp_path / ".model.safetensors.x8.tmp").write_bytes(b"half")
    (tmp_path / "notes.tmp").write_text("mine")
    removed = remove_interrupted_writes(tmp_path)
    assert sorted(p.name for p in removed) == [".model.safetensors.x8.tmp", ".step-000460.k2j3.tmp"]
    assert sorted(p.name for p in ckpts.iterdir()) == [".last.old", "step-000400"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints", "notes.tmp"]
    assert remove_interrupted_writes(tmp_path / "absent") == []
