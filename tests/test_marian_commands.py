"""Every tx command on an imported Marian run, unchanged: translate (fp32, int8, --target-lang),
score, evaluate, attention-dump, inspect; outputs checked against transformers where it has them."""

import json

import pytest
import torch

from txcli.commands.import_marian import import_marian

from .marian_models import load_hf, make_marian_dir

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

def run_tx(*args):
    """The CLI in this process (a subprocess per call would load torch each time)."""
    from typer.testing import CliRunner

    from txcli.cli import app

    result = CliRunner().invoke(app, list(args))
    result.returncode = result.exit_code
    return result


SOURCES = ["The dog sees the big cat.", "a small red house", "Green trees sleep with 2024 dogs!"]
REFS = ["Der Hund sieht die Katze.", "ein kleines rotes Haus", "grün"]


@pytest.fixture(scope="module")
def marian_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("commands")
    hf_dir = make_marian_dir(root / "hf", seed=3)
    import_marian(hf_dir, root / "run")
    (root / "src.txt").write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    (root / "ref.txt").write_text("\n".join(REFS) + "\n", encoding="utf-8")
    return root


def hf_translations(root, beams, max_new, prefix=""):
    model, tok = load_hf(root / "hf")
    batch = tok([prefix + s for s in SOURCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, num_beams=beams, length_penalty=0.0, max_new_tokens=max_new, do_sample=False)
    return [tok.decode(row, skip_special_tokens=True) for row in out]


@pytest.mark.parametrize("beams", [1, 4])
def test_translate_matches_transformers_generate(marian_run, beams):
    root = marian_run
    result = run_tx("translate", str(root / "run"), "-i", str(root / "src.txt"), "--beam", str(beams),
                    "--alpha", "0", "--max-len-a", "0", "--max-len-b", "10", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == hf_translations(root, beams, 11)


def test_target_lang_puts_the_token_first_and_unknown_ones_are_one_line(marian_run):
    root = marian_run
    result = run_tx("translate", str(root / "run"), "-i", str(root / "src.txt"), "--beam", "1", "--alpha", "0",
                    "--max-len-a", "0", "--max-len-b", "10", "--target-lang", "deu")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == hf_translations(root, 1, 11, prefix=">>deu<< ")
    bad = run_tx("translate", str(root / "run"), "-i", str(root / "src.txt"), "--target-lang", "xyz")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "error: --target-lang xyz: not in the source vocabulary; it has: deu fra nld"]


def test_int8_bf16_and_an_ensemble_translate(marian_run):
    root = marian_run
    for precision in ("int8", "bf16"):
        result = run_tx("translate", str(root / "run"), "-i", str(root / "src.txt"), "--precision", precision, "--beam", "2")
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.splitlines()) == len(SOURCES)
    common = ["-i", str(root / "src.txt"), "--beam", "2", "--max-len-a", "0", "--max-len-b", "8"]
    alone = run_tx("translate", str(root / "run"), *common)
    pair = run_tx("translate", str(root / "run"), str(root / "run"), *common)  # two equal members: the same output
    assert pair.returncode == 0 and pair.stdout == alone.stdout


def test_score_equals_transformers_log_probabilities(marian_run):
    root = marian_run
    result = run_tx("score", str(root / "run"), "--src", str(root / "src.txt"), "--tgt", str(root / "ref.txt"),
                    "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    mine = [json.loads(line)["logprob"] for line in result.stdout.splitlines()]
    model, tok = load_hf(root / "hf")
    for src, ref, logprob in zip(SOURCES, REFS, mine):
        batch = tok([src], text_target=[ref], return_tensors="pt")
        with torch.no_grad():
            logits = model(input_ids=batch["input_ids"], labels=batch["labels"]).logits
        theirs = torch.log_softmax(logits[0], -1).gather(1, batch["labels"][0][:, None]).sum().item()
        assert logprob == pytest.approx(theirs, abs=2e-3)


def test_evaluate_attention_and_inspect_run(marian_run, tmp_path):
    root = marian_run
    run = str(root / "run")
    evaluated = run_tx("evaluate", run, "--src", str(root / "src.txt"), "--ref", str(root / "ref.txt"), "--beam", "2")
    assert evaluated.returncode == 0 and "BLEU" in evaluated.stdout, evaluated.stderr
    dumped = run_tx("attention-dump", run, "--src", str(root / "src.txt"), "--tgt", str(root / "ref.txt"),
                    "--html", str(tmp_path / "x.html"), "--align", "-o", str(tmp_path / "align.txt"))
    assert dumped.returncode == 0, dumped.stderr
    assert (tmp_path / "x.html").stat().st_size > 1000 and (tmp_path / "align.txt").read_text().strip()
    npz = run_tx("attention-dump", run, "--src", str(root / "src.txt"), "--format", "npz", "-o", str(tmp_path / "a.npz"),
                 "--plot", str(tmp_path / "p.png"))
    assert npz.returncode == 0 and (tmp_path / "a.npz").is_file() and (tmp_path / "p.png").exists(), npz.stderr
    inspected = run_tx("inspect", run)
    assert inspected.returncode == 0 and "norm=post" in inspected.stdout and "activation=silu" in inspected.stdout
    assert "imported from" in inspected.stdout and str((root / "hf").resolve()) in inspected.stdout.replace("\n", "")
    as_json = json.loads(run_tx("inspect", run, "--json").stdout)
    assert as_json["imported"]["source"] == str((root / "hf").resolve())
    assert as_json["imported"]["files"]["model.safetensors"]["sha256"] and as_json["imported"]["weights"] == "model.safetensors"


FINETUNE = """\
name: ft
run_dir: {run_dir}
data:
  train: {{src: {data}/train.src, tgt: {data}/train.tgt}}
  valid: {{src: {data}/train.src, tgt: {data}/train.tgt}}
  max_len: 32
train: {{init_from: {source}, batch_tokens: 256, max_steps: 4}}
"""


def test_recipe_check_estimates_the_model_it_starts_from(marian_run, tmp_path):
    """A fine-tuning recipe that leaves the model section out: `recipe check` shows and estimates
    the imported run's model, not the default one; with no source to read, it says so."""
    from .conftest import make_corpus

    make_corpus(tmp_path, n=20)
    recipe = tmp_path / "ft.yaml"
    recipe.write_text(FINETUNE.format(run_dir=tmp_path / "ft", data=tmp_path, source=marian_run / "run"), encoding="utf-8")
    checked = run_tx("recipe", "check", str(recipe))
    assert checked.returncode == 0, checked.output
    params = json.loads(run_tx("inspect", str(marian_run / "run"), "--json").stdout)["total_params"]
    assert "activation: silu" in checked.stdout and f"{params:,} parameters" in checked.stderr

    recipe.write_text(FINETUNE.format(run_dir=tmp_path / "ft", data=tmp_path, source=tmp_path / "nothing"), encoding="utf-8")
    unread = run_tx("recipe", "check", str(recipe))
    assert unread.returncode == 0, unread.output
    assert "memory not estimated: the model and tokenizer section(s) are left out" in unread.stderr.replace("\n", " ")
    assert "parameters" not in unread.stderr and "no such run" in unread.stderr
