"""Continued training (train.init_from) and the moving average of the weights (train.ema)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from txcli import checkpoint as ckpt
from txcli.commands.run import open_run
from txcli.commands.train import train
from txcli.errors import UsageError
from txcli.search import greedy_search
from txcli.tokenizer import BOS_ID, EOS_ID
from txcli.training import Trainer

from .conftest import metrics, run_tx, tiny


def snapshot(folder: Path) -> dict:
    """Every file under a folder: its content hash and modification time."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def source(tiny_recipe: Path) -> Path:
    """A trained tiny run: the one the tests fine-tune from."""
    train(tiny(tiny_recipe, "train.max_steps=6", "train.eval_every=3"))
    return tiny_recipe.parent / "run"


def no_training(monkeypatch, seen: dict):
    """Make fit() stop before its first step, keeping the weights it starts with."""
    def loop(self):
        seen["weights"] = {k: v.clone() for k, v in self.model.state_dict().items()}
        seen["optimizer"] = self.optimizer.state_dict()
        seen["step"] = self.state.step
        return "max_steps"
    monkeypatch.setattr(Trainer, "_loop", loop)


@pytest.mark.parametrize("reset", ["all", "optimizer", "none"])
def test_a_run_starts_from_the_source_weights_and_translates_like_it(tiny_recipe: Path, source: Path,
                                                                     monkeypatch, reset):
    before = snapshot(source)
    seen: dict = {}
    no_training(monkeypatch, seen)
    recipe = tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", f"train.init_reset={reset}")
    assert recipe.train.init_from == source  # relative to the recipe's folder
    train(recipe)
    expected_file = source / ckpt.MODEL_FILE if reset == "all" else source / "checkpoints/last/model.safetensors"
    _, expected, _ = ckpt.load_model_state(expected_file)
    assert seen["weights"].keys() == expected.keys()
    for name, t in expected.items():
        assert torch.equal(seen["weights"][name], t), name
    src_state = ckpt.read_json(source / "checkpoints/last/state.json")
    assert seen["step"] == (0 if reset == "all" else src_state["step"])
    if reset == "none":  # the AdamW moments came along
        tensors, _ = ckpt.load_tensors(source / "checkpoints/last/trainer.safetensors")
        moments = seen["optimizer"]["state"]
        assert moments and all(torch.equal(moments[int(k.split(".")[1])][k.split(".")[2]], v)
                               for k, v in tensors.items() if k.startswith("optim."))
    else:
        assert not seen["optimizer"]["state"]
    # the same translations as the source model
    new = open_run(recipe.run_dir, device="cpu", weights=recipe.run_dir / "checkpoints/last/model.safetensors")
    old = open_run(source, device="cpu", weights=expected_file)
    src = torch.tensor([new.src_tok.encode("the dog sees a cat") + [EOS_ID]])
    assert greedy_search(new.model, src, 8, BOS_ID, EOS_ID) == greedy_search(old.model, src, 8, BOS_ID, EOS_ID)
    assert (recipe.run_dir / "tokenizer.json").read_bytes() == (source / "tokenizer.json").read_bytes()
    assert snapshot(source) == before


def test_fine_tuning_trains_records_its_source_and_resumes_itself(tiny_recipe: Path, source: Path):
    before = snapshot(source)
    recipe = tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", "train.max_steps=3")
    result = train(recipe)
    assert result.step == 3  # step and schedule start fresh (init_reset all)
    events = metrics(recipe.run_dir)
    init = [e for e in events if e["event"] == "init"]
    assert init == [{"event": "init", "step": 0, "source": str(source / ckpt.MODEL_FILE), "reset": "all"}]
    saved = ckpt.read_json(recipe.run_dir / "checkpoints/last/state.json")
    assert saved["step"] == 3
    assert f"init_from: {source}" in (recipe.run_dir / ckpt.RECIPE_FILE).read_text()
    # --resume goes on with the new run, from its own checkpoint
    resumed = tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", "train.max_steps=5")
    train(resumed, resume=True)
    events = metrics(recipe.run_dir)
    assert [e["step"] for e in events if e["event"] == "end"] == [3, 5]
    assert len([e for e in events if e["event"] == "init"]) == 1
    assert snapshot(source) == before
    r = run_tx("inspect", str(recipe.run_dir))
    assert r.returncode == 0 and "initialised from" in r.stdout and str(source) in r.stdout.replace("\n", "")


def test_a_different_model_or_tokenizer_section_is_refused_naming_the_key(tiny_recipe: Path, source: Path):
    before = snapshot(source)
    with pytest.raises(UsageError, match=rf"^model\.d_model: 64 in the recipe, 32 in {source} "):
        train(tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", "model.d_model=64"))
    with pytest.raises(UsageError, match=r"^tokenizer\.vocab_size: 48 in the recipe, 64 in "):
        train(tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", "tokenizer.vocab_size=48"))
    with pytest.raises(UsageError, match=r"^data\.max_len: 2000 in the recipe needs 2002 positions"):
        train(tiny(tiny_recipe, "run_dir=ft", "train.init_from=run", "data.max_len=2000"))
    with pytest.raises(UsageError, match=r"train\.init_from: .*nowhere: no such run"):
        train(tiny(tiny_recipe, "run_dir=ft", "train.init_from=nowhere"))
    with pytest.raises(UsageError, match="already holds a trained run|own run_dir"):
        train(tiny(tiny_recipe, "train.init_from=run"))
    with pytest.raises(UsageError, match="only checkpoints/last"):
        train(tiny(tiny_recipe, "run_dir=ft", "train.init_from=run/checkpoints/step-000003", "train.init_reset=none"))
    assert not (tiny_recipe.parent / "ft" / ckpt.MODEL_FILE).exists()
    r = run_tx("train", str(tiny_recipe), "--set", "run_dir=ft", "--set", "train.init_from=run",
               "--set", "model.ff=48")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr
    assert "model.ff: 48 in the recipe, 64 in" in r.stderr
    assert snapshot(source) == before


def test_a_checkpoint_directory_as_the_source(tiny_recipe: Path, source: Path):
    recipe = tiny(tiny_recipe, "run_dir=ft", "train.init_from=run/checkpoints/step-000003", "train.max_steps=2")
    train(recipe)
    init = [e for e in metrics(recipe.run_dir) if e["event"] == "init"]
    assert init[0]["source"] == str(source / "checkpoints/step-000003/model.safetensors")


# --------------------------------------------------------------------------- EMA


def test_ema_follows_its_formula_and_is_saved(tiny_recipe: Path, monkeypatch):
    weights: list[list[torch.Tensor]] = []
    step = Trainer._optimizer_step

    def recording(self, loss_sum):
        if not weights:
            weights.append([p.detach().clone() for p in self.model.parameters()])  # the initial ones
        ok = step(self, loss_sum)
        weights.append([p.detach().clone() for p in self.model.parameters()])
        return ok

    monkeypatch.setattr(Trainer, "_optimizer_step", recording)
    decay = 0.6
    recipe = tiny(tiny_recipe, "train.max_steps=5", "train.eval_every=100", f"train.ema={decay}")
    result = train(recipe)
    assert len(weights) == 6
    expected = [w.clone() for w in weights[0]]
    for t in range(1, 6):
        d = min(decay, (1 + t) / (10 + t))
        expected = [d * e + (1 - d) * w for e, w in zip(expected, weights[t])]
    tensors, _ = ckpt.load_tensors(recipe.run_dir / "checkpoints/last/trainer.safetensors")
    names = [n for n, _ in result.model.named_parameters()]
    assert {k for k in tensors if k.startswith("ema.")} == {f"ema.{n}" for n in names}
    for n, e, w in zip(names, expected, weights[-1]):
        torch.testing.assert_close(tensors[f"ema.{n}"], e, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(e, w)  # the average is not the weights themselves


def test_ema_is_validated_and_the_better_weights_are_kept(tiny_recipe: Path):
    recipe = tiny(tiny_recipe, "train.max_steps=12", "train.eval_every=3", "train.ema=0.5",
                  "train.early_stop.metric=loss")
    train(recipe)
    valid = [e for e in metrics(recipe.run_dir) if e["event"] == "valid"]
    assert [(e["step"], e["weights"]) for e in valid] == [(s, w) for s in (3, 6, 9, 12) for w in ("model", "ema")]
    assert all(a["loss"] != b["loss"] for a, b in zip(valid[::2], valid[1::2]))
    best = [e for e in valid if e["best"]][-1]
    assert best["loss"] == min(e["loss"] for e in valid)
    _, _, meta = ckpt.load_model_state(recipe.run_dir / ckpt.MODEL_FILE)
    assert meta["tx.weights"] == best["weights"] and meta["tx.step"] == str(best["step"])
    assert float(meta["tx.loss"]) == pytest.approx(best["loss"], abs=1e-4)
    # the step checkpoints keep the trained weights: tx average still averages those
    _, last, _ = ckpt.load_model_state(recipe.run_dir / "checkpoints/last/model.safetensors")
    _, step12, _ = ckpt.load_model_state(recipe.run_dir / "checkpoints/step-000012/model.safetensors")
    assert all(torch.equal(last[k], step12[k]) for k in last)
