"""tx train, in process: schedule, loss, accumulation, resume, checkpoints, averaging (batching: test_batching.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from txcli import checkpoint as ckpt
from txcli.batching import EncodedPairs
from txcli.commands.average import average
from txcli.events import Notice
from txcli.commands.run import open_run
from txcli.commands.train import train
from txcli.commands.train_data import training_stream
from txcli.errors import TxError, UsageError
from txcli.loss import smoothed_loss_sum
from txcli.optim import lr_at
from txcli.search import greedy_search
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID
from txcli.training import Trainer

from .conftest import metrics, tiny


def assert_decodes(model) -> None:
    """A loaded model translates: one output of at most 5 ids, all real subwords (no specials)."""
    (out,) = greedy_search(model, torch.tensor([[5, 6, EOS_ID]]), 5, BOS_ID, EOS_ID)
    assert len(out) <= 5
    assert all(t not in (PAD_ID, BOS_ID, EOS_ID) and 0 <= t < model.cfg.tgt_vocab_size for t in out)

def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in metrics(run_dir) if e["event"] == "log"}


# --------------------------------------------------------------------------- schedule, loss, accumulation


def test_schedules_match_their_formulas():
    assert lr_at(50, 1e-3, 100, "inverse_sqrt", 1000) == pytest.approx(5e-4)
    assert lr_at(100, 1e-3, 100, "inverse_sqrt", 1000) == pytest.approx(1e-3)
    assert lr_at(400, 1e-3, 100, "inverse_sqrt", 1000) == pytest.approx(1e-3 * math.sqrt(100 / 400))
    assert lr_at(25, 1e-3, 100, "cosine", 1100, min_lr=1e-5) == pytest.approx(2.5e-4)
    assert lr_at(600, 1e-3, 100, "cosine", 1100, min_lr=1e-5) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)
    assert lr_at(1100, 1e-3, 100, "cosine", 1100, min_lr=1e-5) == pytest.approx(1e-5)
    assert lr_at(5000, 1e-3, 100, "cosine", 1100, min_lr=1e-5) == pytest.approx(1e-5)


def test_loss_ignores_padding_and_smooths():
    logits = torch.randn(2, 3, 7)
    target = torch.tensor([[4, 5, PAD_ID], [6, PAD_ID, PAD_ID]])
    plain = smoothed_loss_sum(logits, target, 0.0)
    lp = logits.log_softmax(-1)
    expected = -(lp[0, 0, 4] + lp[0, 1, 5] + lp[1, 0, 6])
    assert plain == pytest.approx(float(expected), rel=1e-5)
    eps = 0.1
    smooth = sum((1 - eps) * -lp[i, j, t] + eps * -lp[i, j].mean() for i, j, t in [(0, 0, 4), (0, 1, 5), (1, 0, 6)])
    assert smoothed_loss_sum(logits, target, eps) == pytest.approx(float(smooth), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_gradient_equals_torch_cross_entropy(dtype):
    import torch.nn.functional as F

    from txcli import loss

    torch.manual_seed(0)
    rows = 3 * loss.LOSS_ROWS + 5  # several row blocks and a ragged last one
    logits = torch.randn(rows, 50).to(dtype).requires_grad_()
    target = torch.randint(4, 50, (rows,))
    target[::7] = PAD_ID
    mine = smoothed_loss_sum(logits, target, 0.1)
    (2 * mine).backward()
    ours = logits.grad.clone()
    logits.grad = None
    ref = F.cross_entropy(logits.float(), target, ignore_index=PAD_ID, label_smoothing=0.1, reduction="sum")
    (2 * ref).backward()
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 2e-3}
    torch.testing.assert_close(mine, ref, **tol)
    torch.testing.assert_close(ours.float(), logits.grad.float(), **tol)
    assert ours.dtype == dtype and (ours[::7] == 0).all()  # padding gets no gradient


def _tiny_trainer(tiny_recipe: Path, *overrides: str) -> Trainer:
    from txcli.commands.run import model_config
    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.model import Seq2SeqTransformer

    recipe = tiny(tiny_recipe, *overrides)
    train_tokenizers(recipe)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, True)
    torch.manual_seed(0)
    cfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    stream = training_stream(recipe, src_tok, tgt_tok)
    trainer = Trainer(Seq2SeqTransformer(cfg), cfg.to_dict(), recipe.train, stream, None, recipe.run_dir,
                      torch.device("cpu"))
    trainer.src_tok = src_tok
    return trainer


def test_two_half_batches_give_the_gradients_of_one_full_batch(tiny_recipe: Path):
    trainer = _tiny_trainer(tiny_recipe)
    lines = Path(tiny_recipe.parent / "train.src").read_text().splitlines()[:16]
    tgts = Path(tiny_recipe.parent / "train.tgt").read_text().splitlines()[:16]
    enc = trainer.src_tok.encode_batch
    pool = EncodedPairs([np.array(x) for x in enc(lines)], [np.array(x) for x in enc(tgts)])
    full = pool.make_batch(np.arange(16))
    halves = [pool.make_batch(np.arange(8)), pool.make_batch(np.arange(8, 16))]

    def grads(batches):
        trainer.accumulate_gradients(batches, float(sum(b.n_tgt_tokens for b in batches)))
        return [p.grad.clone() for p in trainer.model.parameters()]

    for g_full, g_acc in zip(grads([full]), grads(halves)):
        torch.testing.assert_close(g_acc, g_full, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- whole runs


def test_a_few_steps_lower_the_loss_and_the_run_dir_is_complete(tiny_recipe: Path):
    recipe = tiny(tiny_recipe, "train.max_steps=40", "train.eval_every=20")
    result = train(recipe)
    run_dir = recipe.run_dir
    assert result.reason == "max_steps" and result.step == 40
    curve = losses(run_dir)
    assert curve[40] < 0.75 * curve[5]
    for name in ("recipe.yaml", "tokenizer.json", "model.safetensors", "metrics.jsonl", "train.log",
                 "checkpoints/last/model.safetensors", "checkpoints/last/trainer.safetensors",
                 "checkpoints/last/state.json", "checkpoints/step-000020", "checkpoints/step-000040"):
        assert (run_dir / name).exists(), name
    events = metrics(run_dir)
    valid = [e for e in events if e["event"] == "valid"]
    assert [e["step"] for e in valid] == [20, 40]
    assert {"loss", "ppl", "bleu", "chrf", "best", "elapsed"} <= set(valid[0])
    assert {"step", "epoch", "elapsed", "loss", "lr", "tokens_per_s"} <= set(events[1])
    logs = [e for e in events if e["event"] == "log"]  # what the process held and how busy it was
    assert logs and all(0 < e["rss_mb"] <= e["peak_rss_mb"] and e["cpu_per_wall"] > 0 for e in logs)
    assert [e["peak_rss_mb"] for e in logs] == sorted(e["peak_rss_mb"] for e in logs)
    assert " rss " in (run_dir / "train.log").read_text(encoding="utf-8")
    assert events[-1]["event"] == "end" and events[-1]["reason"] == "max_steps"
    assert any(e["event"] == "epoch" and e["corpora"]["train"]["dropped"].get("max_len", 0) > 0 for e in events)
    run = open_run(run_dir, device="cpu")  # what translate / attention-dump / inspect load
    assert_decodes(run.model)


@pytest.fixture
def fresh_compiler():
    """Compiled tests start from dynamo's empty state, so what they count is their own."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("compiled, ema", [(False, None), (False, 0.9), pytest.param(True, None, marks=pytest.mark.compile)],
                         ids=["eager", "eager-ema", "compiled"])
def test_resumed_run_gives_the_same_losses_as_an_unbroken_one(tmp_path: Path, tiny_recipe: Path, compiled: bool,
                                                               ema, fresh_compiler):
    common = ["model.dropout=0.2", "train.max_steps=30", "train.log_every=1", "train.eval_every=100",
              f"train.compile={str(compiled).lower()}"]
    common += [f"train.ema={ema}"] if ema else []
    unbroken = tiny(tiny_recipe, *common + [f"run_dir={tmp_path / 'a'}"])
    train(unbroken)
    broken = tiny(tiny_recipe, *common + [f"run_dir={tmp_path / 'b'}", "train.max_steps=12"])
    train(broken)
    resumed = tiny(tiny_recipe, *common + [f"run_dir={tmp_path / 'b'}"])
    killed_save = tmp_path / "b" / "checkpoints" / ".step-000012.k2j3.tmp"  # what kill -9 mid-save leaves
    killed_save.mkdir()
    (killed_save / "model.safetensors").write_bytes(b"half")
    train(resumed, resume=True)  # crosses an epoch boundary (17 batches an epoch)
    assert not killed_save.exists()
    assert "removed 1 half-written file(s)" in (tmp_path / "b" / "train.log").read_text(encoding="utf-8")
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 31))  # no step logged twice
    for step in range(13, 31):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    ends = [e for e in metrics(tmp_path / "b") if e["event"] == "end"]
    assert [e["step"] for e in ends] == [12, 30] and ends[1]["elapsed"] > ends[0]["elapsed"]
    if ema:  # the moving average goes on from the checkpoint as if never stopped
        ta, _ = ckpt.load_tensors(tmp_path / "a" / "checkpoints/last/trainer.safetensors")
        tb, _ = ckpt.load_tensors(tmp_path / "b" / "checkpoints/last/trainer.safetensors")
        keys = [k for k in ta if k.startswith("ema.")]
        assert keys and keys == [k for k in tb if k.startswith("ema.")]
        for k in keys:
            torch.testing.assert_close(tb[k], ta[k], rtol=1e-5, atol=1e-6)


# Compiled and eager differ by float rounding only (inductor fuses and reorders sums): the losses
# of the first steps agree to 1e-4 relative; dropout off, as the two draw their masks differently.
COMPILED_LOSS_RTOL = 1e-4


@pytest.mark.compile
def test_compiled_training_matches_eager_and_checkpoints_cross_over(tmp_path: Path, tiny_recipe: Path,
                                                                     fresh_compiler):
    common = ["train.max_steps=8", "train.log_every=1", "train.eval_every=8", "train.valid_max_sentences=4"]
    eager = tiny(tiny_recipe, *common, f"run_dir={tmp_path / 'eager'}", "train.compile=false")
    compiled = tiny(tiny_recipe, *common, f"run_dir={tmp_path / 'compiled'}", "train.compile=true")
    train(eager)
    train(compiled)
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=COMPILED_LOSS_RTOL), step
    compiles = [e for e in metrics(tmp_path / "compiled") if e["event"] == "compile"]
    # one model graph and one loss graph, at the first step: batches of other shapes reuse them
    assert [(e["step"], e["new_graphs"]) for e in compiles] == [(1, 2)] and compiles[0]["step_seconds"] > 0
    assert not any(e["event"] == "compile" for e in metrics(tmp_path / "eager"))
    # checkpoints hold the eager module's names either way, so each run resumes in the other mode
    for run, mode in (("eager", "true"), ("compiled", "false")):
        _, weights, _ = ckpt.load_model_state(tmp_path / run / "checkpoints/last/model.safetensors")
        assert not any(k.startswith("_orig_mod.") for k in weights)
        train(tiny(tiny_recipe, *common, f"run_dir={tmp_path / run}", "train.max_steps=12",
                   f"train.compile={mode}"), resume=True)
    a, b = losses(tmp_path / "eager"), losses(tmp_path / "compiled")
    for step in range(9, 13):
        assert b[step] == pytest.approx(a[step], rel=COMPILED_LOSS_RTOL), step
    assert_decodes(open_run(tmp_path / "compiled", device="cpu").model)


def test_stop_rule_stops_on_the_target_else_on_patience_else_goes_on():
    from types import SimpleNamespace

    from txcli.schema import EarlyStop, StopAt
    from txcli.validation import stop_reason

    scores = {"bleu": 90.5, "chrf": 95.0, "loss": 1.5, "ppl": 4.5}
    cfg = SimpleNamespace(stop_at=StopAt(metric="bleu", value=90), early_stop=EarlyStop(patience=3))
    assert stop_reason(cfg, scores, 0) == "target"
    assert stop_reason(cfg, {**scores, "bleu": 89.9}, 0) is None
    assert stop_reason(cfg, {**scores, "bleu": 89.9}, 3) == "early_stop"
    cfg.stop_at = StopAt(metric="loss", value=1.5)  # loss: at or below
    assert stop_reason(cfg, scores, 0) == "target"
    assert stop_reason(cfg, {**scores, "loss": 1.6}, 0) is None
    cfg.stop_at, cfg.early_stop = None, None
    assert stop_reason(cfg, scores, 99) is None


@pytest.mark.parametrize("target,reason,steps", [(100.0, "target", 4), (0.0, "max_steps", 12)])
def test_training_stops_at_its_target_or_runs_the_step_budget(tiny_recipe: Path, target, reason, steps):
    recipe = tiny(tiny_recipe, "train.max_steps=12", "train.eval_every=4", "train.valid_max_sentences=4",
                  "train.early_stop=null", f"train.stop_at={{metric: loss, value: {target}}}")
    result = train(recipe)
    assert (result.reason, result.step) == (reason, steps)
    assert metrics(recipe.run_dir)[-1]["reason"] == reason


def test_fresh_run_over_a_trained_one_and_bad_resumes_are_refused(tiny_recipe: Path):
    recipe = tiny(tiny_recipe, "train.max_steps=2")
    with pytest.raises(UsageError, match="nothing to resume"):
        train(recipe, resume=True)
    train(recipe)
    with pytest.raises(UsageError, match="--resume"):
        train(recipe)
    with pytest.raises(UsageError, match="'model' differs"):
        train(tiny(tiny_recipe, "train.max_steps=4", "model.ff=48"), resume=True)
    events = []
    train(tiny(tiny_recipe, "train.max_steps=3", "train.batch_tokens=200"), resume=True, progress=events.append)
    assert any(isinstance(e, Notice) and "train.batch_tokens" in e.message for e in events)


@pytest.mark.parametrize("damage", ["truncate", "json"])
def test_damaged_last_checkpoint_is_a_clear_error(tiny_recipe: Path, damage: str):
    recipe = tiny(tiny_recipe, "train.max_steps=2")
    train(recipe)
    last = recipe.run_dir / "checkpoints" / "last"
    if damage == "truncate":
        path = last / "trainer.safetensors"
        path.write_bytes(path.read_bytes()[:100])
    else:
        path = last / "state.json"
        path.write_text('{"step": 2, "train_st')
    with pytest.raises(TxError, match=f"{path.name}: damaged"):
        train(tiny(tiny_recipe, "train.max_steps=4"), resume=True)


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_recipe: Path, monkeypatch):
    import txcli.training as training
    import txcli.validation as validation

    calls = {"n": 0}
    real = training.smoothed_loss_sum

    def sometimes_nan(logits, target, smoothing):
        calls["n"] += 1
        loss = real(logits, target, smoothing)
        return loss * float("nan") if calls["n"] == 7 else loss

    # the training steps and the validation loss count alike: the 7th call falls after step 3's checkpoint
    monkeypatch.setattr(training, "smoothed_loss_sum", sometimes_nan)
    monkeypatch.setattr(validation, "smoothed_loss_sum", sometimes_nan)
    recipe = tiny(tiny_recipe, "train.max_steps=20", "train.eval_every=3", "train.valid_max_sentences=2")
    with pytest.raises(TxError, match="loss became nan at step .*last good checkpoint"):
        train(recipe)
    state = json.loads((recipe.run_dir / "checkpoints/last/state.json").read_text())
    assert state["step"] == 3
    assert metrics(recipe.run_dir)[-1]["event"] == "end" and metrics(recipe.run_dir)[-1]["reason"] == "nan"


def test_average_of_best_checkpoints_loads_and_translates(tiny_recipe: Path):
    recipe = tiny(tiny_recipe, *["train.max_steps=8", "train.eval_every=2", "train.keep_best=2",
                                       "train.keep_last=0", "train.early_stop.metric=loss"])
    train(recipe)
    run_dir = recipe.run_dir
    kept = ckpt.list_step_checkpoints(run_dir / "checkpoints")
    assert len(kept) == 2  # pruned to the best two by validation loss
    result = average(run_dir, best=2)
    assert result.steps == [s for s, _ in kept] and result.output == run_dir / "model.safetensors"
    _, a, _ = ckpt.load_model_state(kept[0][1] / "model.safetensors")
    _, b, _ = ckpt.load_model_state(kept[1][1] / "model.safetensors")
    _, avg, meta = ckpt.load_model_state(run_dir / "model.safetensors")
    for name in a:
        torch.testing.assert_close(avg[name], (a[name] + b[name]) / 2)
    assert meta["tx.averaged_steps"] == ",".join(str(s) for s, _ in kept)
    run = open_run(run_dir, device="cpu")
    assert run.model.out_proj.weight is run.model.tgt_embed.weight
    assert_decodes(run.model)
    with pytest.raises(UsageError, match="2 step checkpoint"):
        average(run_dir, last=3)


def test_live_display_on_a_terminal_and_plain_lines_otherwise():
    import io

    from rich.console import Console

    from txcli.events import Log, Setup, Validation
    from txcli.progress import LiveProgress, PlainProgress, train_progress

    events = [Setup(params=1000, max_steps=100, max_minutes=5, resumed=False, valid_pairs=7),
              Log(step=50, epoch=2, elapsed=30.0, loss=2.5, lr=1e-3, tokens_per_s=1234.0),
              Validation(step=50, epoch=2, elapsed=31.0, loss=2.0, ppl=7.39, bleu=12.5, chrf=30.0, best=True)]
    tty = Console(file=io.StringIO(), force_terminal=True, width=100)
    progress = train_progress(tty)
    assert isinstance(progress, LiveProgress)
    with progress:
        for e in events:
            progress.event(e)
    shown = tty.file.getvalue()
    assert "50 / 100" in shown and "1,234" in shown and "12.50 (best 12.50 @ 50)" in shown
    assert "0:30 / 0:30" in shown  # ETA: 50 more steps at 0.6 s a step
    pipe = Console(file=io.StringIO(), force_terminal=False)
    progress = train_progress(pipe)
    assert type(progress) is PlainProgress
    for e in events:
        progress.event(e)
    lines = pipe.file.getvalue().splitlines()
    assert len(lines) == 3 and lines[1].startswith("step     50") and "BLEU 12.50" in lines[2]


def test_packed_dropout_drops_at_rate_p_scales_the_rest_and_masks_the_gradient():
    from txcli.model import ModelConfig, Seq2SeqTransformer
    from txcli.fast_dropout import PackedDropout, use_packed_dropout

    drop = PackedDropout(0.1)
    x = (torch.rand(1000, 1001) + 0.5).requires_grad_()  # odd size: the last 64-bit draw is cut
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - 0.1) < 0.002
    torch.testing.assert_close(y[kept], x[kept] * (65536 / (65536 - 6554)))
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the draws come from torch's generator: seeds reproduce them
    assert drop.eval()(x) is x
    model = Seq2SeqTransformer(ModelConfig(40, 40, d_model=16, heads=2, ff=32, encoder_layers=1,
                                           decoder_layers=1, dropout=0.1))
    names = set(model.state_dict())
    originals = [m for m in model.modules() if type(m) is torch.nn.Dropout]
    undo = use_packed_dropout(model)
    assert not any(type(m) is torch.nn.Dropout for m in model.modules())
    # embeddings 1; encoder layer: attention weights, 2 residuals, feed-forward; decoder layer: 2 x attention
    # weights, 3 residuals, feed-forward
    assert sum(isinstance(m, PackedDropout) for m in model.modules()) == 11 and set(model.state_dict()) == names
    undo()  # the very same nn.Dropout modules back in their places
    assert [m for m in model.modules() if type(m) is torch.nn.Dropout] == originals and len(originals) == 11
    assert not any(isinstance(m, PackedDropout) for m in model.modules())


def test_training_hands_back_its_model_and_the_process_as_it_found_them(tiny_recipe: Path, monkeypatch):
    """Trainer.fit trains with PackedDropout on CPU and train() applies the training process
    settings (txcli/process.py); the caller gets a plain model and its own settings back."""
    import os

    from txcli.fast_dropout import PackedDropout
    from txcli.process import set_threads

    for name in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(name, raising=False)
    undo = set_threads(2)
    try:
        result = train(tiny(tiny_recipe, "model.dropout=0.1", "train.max_steps=2", "train.eval_every=2"))
        assert torch.get_num_threads() == 2  # the recipe's train.threads=1 was undone
    finally:
        undo()
    assert "GOMP_SPINCOUNT" not in os.environ and "KMP_BLOCKTIME" not in os.environ
    assert not any(isinstance(m, PackedDropout) for m in result.model.modules())
    assert sum(type(m) is torch.nn.Dropout for m in result.model.modules()) == 21  # 1 + 2 x 4 + 2 x 6
