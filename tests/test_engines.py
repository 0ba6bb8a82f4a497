"""The CTranslate2 export and engine against the torch engine, int8 decoding, and the torch-free
start of `--engine ctranslate2`. Tiny untrained models: what must agree is the arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from txcli.checkpoint import MODEL_FILE, RECIPE_FILE, save_model, write_text_atomic
from txcli.commands.run import load_tokenizers, model_config, open_run, train_tokenizers
from txcli.decoding import decoding_precision
from txcli.engines import open_engine
from txcli.engines.ct2_export import CACHE_DIR, EXPORT_INFO, export_info, export_run
from txcli.errors import UsageError
from txcli.model import Seq2SeqTransformer
from txcli.options import DecodeOptions
from txcli.quantize import int8_copy
from txcli.schema import dump_yaml, load_recipe
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID
from txcli.translation import translate_lines

from .conftest import ROOT, TINY_RECIPE, make_corpus, run_tx

pytestmark = pytest.mark.usefixtures("one_thread")
SAME_LIMIT = {"max_len_a": 0.0, "max_len_b": 8}  # one output limit for every sentence: CTranslate2 has one per batch


def make_run(folder: Path, joint: bool = True, norm: str = "pre", activation: str = "relu", tie: bool = True,
             eos_bias: float = 0.0) -> Path:
    """A run directory with an untrained tiny model of the given shape. eos_bias (untied models
    only, which have an output bias): <pad> and <s> get -30, so both engines see the same
    distribution whether the forbidden tokens go before or after the softmax, and </s> this much,
    so hypotheses end before the limit."""
    folder.mkdir(parents=True, exist_ok=True)
    make_corpus(folder)
    text = TINY_RECIPE.format(kind="bpe", joint=str(joint).lower()).replace(
        "dropout: 0.0}", f"dropout: 0.0, norm: {norm}, activation: {activation}, tie_embeddings: {str(tie).lower()}}}")
    (folder / "recipe.yaml").write_text(text, encoding="utf-8")
    recipe = load_recipe(folder / "recipe.yaml")
    train_tokenizers(recipe)
    src_tok, tgt_tok = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    torch.manual_seed(0)
    cfg = model_config(recipe, src_tok.vocab_size, tgt_tok.vocab_size)
    model = Seq2SeqTransformer(cfg)
    if not tie:
        with torch.no_grad():
            model.out_proj.bias[PAD_ID] = model.out_proj.bias[BOS_ID] = -30.0
            model.out_proj.bias[EOS_ID] = eos_bias
    save_model(recipe.run_dir / MODEL_FILE, model, cfg.to_dict())
    write_text_atomic(recipe.run_dir / RECIPE_FILE, dump_yaml(recipe.to_plain()))
    return recipe.run_dir


def sources(run_dir: Path, n: int = 60) -> list[str]:
    return (run_dir.parent / "train.src").read_text(encoding="utf-8").splitlines()[:n]


def decode(run_dir: Path, engine: str, texts: list[str], **options):
    translator = open_engine(engine, run_dir, DecodeOptions(**options), "cpu", 1)
    return translate_lines(translator, texts, translator.max_len)[0]


@pytest.mark.parametrize("joint,norm,activation,tie", [
    (True, "pre", "relu", True), (False, "pre", "relu", True), (True, "post", "gelu", False),
    (False, "post", "relu", False), (True, "pre", "gelu", False)])
def test_every_model_shape_exports_and_decodes_like_the_torch_engine(tmp_path, joint, norm, activation, tie):
    run_dir = make_run(tmp_path / "t", joint, norm, activation, tie)
    texts = sources(run_dir)
    ours = decode(run_dir, "torch", texts, beam=1, alpha=0.0, **SAME_LIMIT)
    theirs = decode(run_dir, "ctranslate2", texts, beam=1, alpha=0.0, **SAME_LIMIT)
    # greedy picks the same argmax whether <pad>/<s> are removed before or after the softmax
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(ours, theirs))
    assert same >= 0.95 * len(texts), f"{same}/{len(texts)} greedy outputs agree"
    vocab = json.loads((run_dir / CACHE_DIR / ("shared_vocabulary.json" if joint else "target_vocabulary.json"))
                       .read_text(encoding="utf-8"))
    tok = open_run(run_dir, "cpu").tgt_tok
    assert vocab == [tok.hf.id_to_token(i) for i in range(tok.vocab_size)]  # token strings in id order


def test_nbest_log_probabilities_agree_at_alpha_zero(tmp_path):
    run_dir = make_run(tmp_path / "t", tie=False, eos_bias=1.0)
    texts = sources(run_dir, 40)
    ours = decode(run_dir, "torch", texts, beam=4, nbest=4, alpha=0.0, **SAME_LIMIT)
    theirs = decode(run_dir, "ctranslate2", texts, beam=4, nbest=4, alpha=0.0, **SAME_LIMIT)
    assert sum(a[0].tokens == b[0].tokens for a, b in zip(ours, theirs)) >= 0.9 * len(texts)
    ended = found = 0
    for a, b in zip(ours, theirs):
        assert len(a) == len(b) == 4
        theirs_by_tokens = {tuple(y.tokens): y for y in b}
        # at the limit the torch engine adds </s> and CTranslate2 stops: compare those that ended before it
        for x in (x for x in a if len(x.tokens) < SAME_LIMIT["max_len_b"]):
            ended += 1
            y = theirs_by_tokens.get(tuple(x.tokens))
            if y is not None:
                found += 1
                assert abs(x.logprob - y.logprob) <= 1e-3 * (len(x.tokens) + 1)
                assert y.score == pytest.approx(y.logprob)  # alpha 0: the score is the log-probability
    assert ended >= 2 * len(texts) and found >= 0.9 * ended, (found, ended)
    # CTranslate2's length penalty divides by length^alpha, the length counting </s>
    penalised = decode(run_dir, "ctranslate2", texts[:5], beam=4, nbest=2, alpha=1.0, **SAME_LIMIT)
    for hyps in penalised:
        for h in hyps:
            if len(h.tokens) < SAME_LIMIT["max_len_b"]:
                assert h.score == pytest.approx(h.logprob / (len(h.tokens) + 1), abs=1e-5)


def test_the_cache_is_reused_until_the_weights_change_and_an_export_runs_alone(tmp_path):
    run_dir = make_run(tmp_path / "t")
    first = open_engine("ctranslate2", run_dir, DecodeOptions(), "cpu", 1)
    assert first.warning and "exported the model" in first.warning
    made = (run_dir / CACHE_DIR / "model.bin").stat().st_mtime_ns
    again = open_engine("ctranslate2", run_dir, DecodeOptions(), "cpu", 1)
    assert "exported" not in (again.warning or "") and (run_dir / CACHE_DIR / "model.bin").stat().st_mtime_ns == made
    os.utime(run_dir / MODEL_FILE, ns=(made + 10**9, made + 10**9))  # new weights (or the same, touched)
    third = open_engine("ctranslate2", run_dir, DecodeOptions(), "cpu", 1)
    assert "exported the model" in third.warning
    assert export_info(run_dir / CACHE_DIR)["weights"]["mtime_ns"] == made + 10**9

    out = tmp_path / "exported"
    result = run_tx("export", "ctranslate2", str(run_dir), str(out), "--quantization", "int8")
    assert result.returncode == 0, result.stderr
    info = json.loads((out / EXPORT_INFO).read_text())
    assert info["quantization"] == "int8" and info["max_len"] == 32 and info["decode"]["beam"] == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.bin", "shared_vocabulary.json", "src_tokenizer.json", "tgt_tokenizer.json", EXPORT_INFO])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left behind
    result = run_tx("translate", str(out), "--engine", "ctranslate2", "--threads", "1", input="the dog\n\ncat\n")
    assert result.returncode == 0 and result.stdout.count("\n") == 3, result.stderr
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "notes.txt").write_text("mine")
    result = run_tx("export", "ctranslate2", str(run_dir), str(tmp_path / "keep"))
    assert result.returncode == 2 and "refusing to replace" in result.stderr
    assert (tmp_path / "keep" / "notes.txt").read_text() == "mine"
    result = run_tx("export", "ctranslate2", str(run_dir), str(out), "--quantization", "int3")
    assert result.returncode == 2 and "--quantization 'int3'" in result.stderr


def test_the_ctranslate2_path_imports_no_torch(tmp_path):
    run_dir = make_run(tmp_path / "t")
    export_run(run_dir, run_dir / CACHE_DIR)  # the first use exports, which needs torch; then none
    code = ("import sys, io; from typer.testing import CliRunner; from txcli.cli import app; "
            f"r = CliRunner().invoke(app, ['translate', {str(run_dir)!r}, '--engine', 'ctranslate2', '--threads', '1'], "
            "input='the dog\\n\\ncat\\n'); "
            "assert r.exit_code == 0, r.output; assert r.stdout.count('\\n') == 3, r.stdout; "
            "assert 'torch' not in sys.modules, 'the ctranslate2 engine imported torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout


@pytest.mark.parametrize("command", ["translate", "export"])
def test_missing_ctranslate2_is_one_line_and_exit_2(tiny_run, tmp_path, command):
    args = (["translate", str(tiny_run), "--engine", "ctranslate2"] if command == "translate"
            else ["export", "ctranslate2", str(tiny_run), str(tmp_path / "out")])
    code = ("import sys; sys.modules['ctranslate2'] = None; sys.argv = ['tx'] + sys.argv[1:]; "
            "from txcli.cli import main; main()")
    result = subprocess.run([sys.executable, "-c", code, *args], input="a\n", capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install -e '.[ct2]'" in lines[0] and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- int8


def test_int8_decodes_like_fp32_and_leaves_the_fp32_model_tied(tmp_path):
    run_dir = make_run(tmp_path / "t")
    run = open_run(run_dir, "cpu")
    model = run.model
    assert model.out_proj.weight is model.tgt_embed.weight
    quantized = int8_copy(model)
    assert model.out_proj.weight is model.tgt_embed.weight  # the fp32 model is untouched, still tied
    assert all(type(m) is not torch.nn.Linear for m in quantized.modules())  # every Linear multiplies in int8
    assert quantized.tgt_embed.weight.dtype == torch.float32  # the embeddings stay fp32
    texts = sources(run_dir)
    fp32 = decode(run_dir, "torch", texts, beam=1, precision="fp32", **SAME_LIMIT)
    int8 = decode(run_dir, "torch", texts, beam=1, precision="int8", **SAME_LIMIT)
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(fp32, int8))
    assert same >= 0.7 * len(texts), f"{same}/{len(texts)}"
    assert any(a[0].logprob != b[0].logprob for a, b in zip(fp32, int8))  # int8 really ran
    with pytest.raises(UsageError, match="CPU only"):
        decoding_precision("int8", torch.device("cuda"))


def test_int8_in_score_and_ctranslate2(tiny_run, tmp_path):
    (tmp_path / "s").write_text("the dog\nbig cat\n")
    (tmp_path / "t").write_text("DOG THE\nCAT BIG\n")
    fp32 = run_tx("score", str(tiny_run), "--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t"), "--threads", "1")
    int8 = run_tx("score", str(tiny_run), "--src", str(tmp_path / "s"), "--tgt", str(tmp_path / "t"), "--threads", "1",
                  "--precision", "int8")
    assert fp32.returncode == 0 and int8.returncode == 0, int8.stderr
    for a, b in zip(fp32.stdout.splitlines(), int8.stdout.splitlines()):
        assert abs(float(a.split("\t")[0]) - float(b.split("\t")[0])) < 0.5
    ct2 = run_tx("translate", str(tiny_run), "--engine", "ctranslate2", "--precision", "int8", "--threads", "1",
                 input="the dog\n\n")
    assert ct2.returncode == 0 and ct2.stdout.count("\n") == 2, ct2.stderr
    result = run_tx("evaluate", str(tiny_run), "--engine", "ctranslate2", "--src", str(tmp_path / "s"),
                    "--ref", str(tmp_path / "t"), "--json", "--precision", "int8", "--threads", "1")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["decoding"] == {"engine": "ctranslate2", "beam": 2, "alpha": 0.6,
                                                     "sample": False, "precision": "int8"}


def test_int8_weights_have_one_scale_per_output_row():
    """An output projection whose rows differ 100x in size (as rare and frequent subwords do):
    with one scale per row, the small rows keep their precision; with one scale for the whole
    tensor (quantize_dynamic's default) the large rows set the step and the small rows' logits
    come out mostly rounding error."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(64, 400)
    with torch.no_grad():
        layer.weight.mul_(torch.logspace(-2, 0, 400)[:, None])  # row norms from 0.01x to 1x
        layer.bias.zero_()
    x = torch.randn(32, 64)
    small = slice(0, 100)  # the 100 smallest rows
    exact = layer(x)[:, small]

    def error(weight_scales):
        quantized = int8_copy(torch.nn.Sequential(layer), weight_scales)
        assert quantized[0].weight().qscheme() in (
            (torch.per_channel_affine, torch.per_channel_symmetric) if weight_scales == "per_channel"
            else (torch.per_tensor_affine, torch.per_tensor_symmetric))
        with torch.no_grad():
            return float((quantized(x)[:, small] - exact).norm() / exact.norm())

    per_channel, per_tensor = error("per_channel"), error("per_tensor")
    assert per_channel < 0.05, per_channel
    assert per_tensor > 4 * per_channel, (per_tensor, per_channel)


# --------------------------------------------------------------------------- memory across calls


def test_the_torch_engine_keeps_its_cache_memory_across_calls_and_variants(tmp_path, monkeypatch):
    """A server decodes batch after batch through one engine: the key/value cache's buffer is
    made once, not at every call (fresh pages), and glibc keeps freed blocks for the next step."""
    import txcli.commands.run as run_module

    kept = []
    monkeypatch.setattr(run_module, "keep_freed_memory", lambda: kept.append(True) or True)
    run_dir = make_run(tmp_path / "t")
    engine = open_engine("torch", run_dir, DecodeOptions(beam=2, **SAME_LIMIT), "cpu", 1)
    assert kept  # open_for_decoding asked glibc to keep freed memory
    texts = sources(run_dir, 12)
    first = translate_lines(engine, texts, engine.max_len)[0]
    buffer = engine.workspace.storage
    assert buffer is not None
    again = translate_lines(engine, texts[:5], engine.max_len)[0]  # a smaller batch fits the same buffer
    assert engine.workspace.storage is buffer
    assert [h[0].tokens for h in again] == [h[0].tokens for h in first[:5]]
    variant = engine.with_options(DecodeOptions(beam=1, **SAME_LIMIT))
    assert variant.workspace is engine.workspace  # decoded by the same thread: one buffer for all
