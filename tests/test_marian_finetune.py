"""Fine-tuning an imported Marian model with train.init_from, the recipe's model and tokenizer
sections left out (taken from the imported run): it trains, resumes exactly, and the result
translates through both engines alike."""

import json

import pytest
import torch

from txcli.commands.import_marian import import_marian
from txcli.commands.train import train
from txcli.schema import load_recipe

from .conftest import make_corpus, metrics
from .marian_models import make_marian_dir

pytestmark = [pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")]

RECIPE = """\
name: finetune
run_dir: {run_dir}
data:
  train: {{src: train.src, tgt: train.tgt}}
  valid: {{src: train.src, tgt: train.tgt}}
  max_len: 32
train: {{init_from: opus, batch_tokens: 256, lr: 1.0e-3, warmup: 2, max_steps: {steps}, eval_every: 4,
        log_every: 1, threads: 1, compile: false, valid_max_sentences: 8}}
decode: {{beam: 2, max_len_b: 6}}
"""


def recipe(tmp_path, run_dir, steps):
    path = tmp_path / f"{run_dir}-{steps}.yaml"
    path.write_text(RECIPE.format(run_dir=run_dir, steps=steps), encoding="utf-8")
    return load_recipe(path)


def losses(run_dir):
    return {e["step"]: e["loss"] for e in metrics(run_dir) if e["event"] == "log"}


def test_fine_tuning_an_imported_model(tmp_path):
    make_corpus(tmp_path, n=60)
    make_marian_dir(tmp_path / "hf", seed=2)
    import_marian(tmp_path / "hf", tmp_path / "opus")
    imported = (tmp_path / "opus" / "recipe.yaml").read_text()

    unbroken = recipe(tmp_path, "a", 8)
    assert "model" not in unbroken.model_fields_set
    result = train(unbroken)
    assert result.step == 8
    saved = json.loads(json.dumps(unbroken.to_plain()))
    assert saved["model"]["activation"] == "silu" and saved["tokenizer"]["kind"] == "sentencepiece"
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "opus" / "tokenizer.json").read_bytes()
    assert (tmp_path / "opus" / "recipe.yaml").read_text() == imported  # the source is only read

    train(recipe(tmp_path, "b", 4))
    train(recipe(tmp_path, "b", 8), resume=True)
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(b) == list(range(1, 9))
    for step in range(5, 9):
        assert b[step] == pytest.approx(a[step], rel=1e-6, abs=1e-7), step
    first = b[1]
    assert min(b.values()) < first  # it learns

    from typer.testing import CliRunner

    from txcli.cli import app

    (tmp_path / "src.txt").write_text("the dog sees the cat\na small house\n", encoding="utf-8")
    outs = []
    for engine in ("torch", "ctranslate2"):
        r = CliRunner().invoke(app, ["translate", str(tmp_path / "a"), "-i", str(tmp_path / "src.txt"), "--engine", engine,
                                     "--beam", "2", "--alpha", "0", "--max-len-a", "0", "--max-len-b", "6", "--tokens"])
        assert r.exit_code == 0, r.output
        outs.append(r.stdout)
    assert outs[0] == outs[1] and len(outs[0].splitlines()) == 2
    torch.set_num_threads(1)
