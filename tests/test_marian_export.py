"""`tx export huggingface`: transformers loads the directory without a missing or unexpected
weight, generates what tx translates, and import -> export -> import gives the weights back bit
for bit. Pre-norm runs and non-sentencepiece tokenizers are refused in one line."""

import json

import pytest
import torch

from txcli.checkpoint import load_tensors
from txcli.commands.export_hf import export_huggingface
from txcli.commands.import_marian import import_marian
from txcli.commands.run import open_run
from txcli.errors import UsageError
from txcli.search import SearchConfig, beam_search
from txcli.tokenizer import BOS_ID, EOS_ID

from .conftest import TINY_RECIPE, make_corpus
from .marian_models import make_marian_dir

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SOURCES = ["The dog sees the big cat.", "a small red house", "Green trees sleep with 2024 dogs!", "in"]
SHAPES = {"shared-tied": dict(), "separate-untied-3heads": dict(shared=False, tied=False, heads=3, d_model=18),
          "shared-untied": dict(tied=False)}


def load_exported(out_dir):
    from transformers import AutoTokenizer, MarianMTModel

    model, info = MarianMTModel.from_pretrained(out_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval(), AutoTokenizer.from_pretrained(out_dir)


def tx_outputs(run, beams, L=10):
    rows = [run.src_tok.encode(s) + [EOS_ID] for s in SOURCES]
    width = max(map(len, rows))
    src = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    cfg = SearchConfig(beam=beams, alpha=0.0, max_len_a=0.0, max_len_b=L)
    return [run.tgt_tok.decode(h[0].tokens) for h in beam_search(run.model, src, cfg, BOS_ID, EOS_ID)]


def hf_outputs(model, tok, beams, L=10):
    batch = tok(SOURCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**batch, num_beams=beams, length_penalty=0.0, max_new_tokens=L + 1, do_sample=False)
    return tok.batch_decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("name", list(SHAPES))
def test_import_export_import_round_trips_and_transformers_generates_the_same(tmp_path, name):
    torch.set_num_threads(1)
    hf_dir = make_marian_dir(tmp_path / "hf", seed=5, **SHAPES[name])
    import_marian(hf_dir, tmp_path / "run")
    export_huggingface(tmp_path / "run", tmp_path / "out")
    model, tok = load_exported(tmp_path / "out")
    run = open_run(tmp_path / "run", "cpu")
    for beams in (1, 4):
        assert hf_outputs(model, tok, beams) == tx_outputs(run, beams)
    # the tokenizer transformers loads cuts text as the original one did
    from transformers import MarianTokenizer

    original = MarianTokenizer.from_pretrained(hf_dir)
    for text in SOURCES + [">>deu<< the dog </s> ☃", "  x  "]:
        assert tok(text)["input_ids"] == original(text)["input_ids"]
        assert tok(text_target=text)["input_ids"] == original(text_target=text)["input_ids"]
    # the same weights as the original files, and again after a second import
    from safetensors.torch import load_file

    before, after = load_file(str(hf_dir / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    assert after.keys() <= before.keys()
    for key, tensor in after.items():
        if key == "model.shared.weight" and name == "shared-untied":
            continue  # untied, transformers' forward reads the encoder's and decoder's tables, never this one
        assert torch.equal(tensor, before[key]), key
    import_marian(tmp_path / "out", tmp_path / "again")
    first, _ = load_tensors(tmp_path / "run" / "model.safetensors")
    second, _ = load_tensors(tmp_path / "again" / "model.safetensors")
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
    for f in ("tokenizer.json", "src_tokenizer.json", "tgt_tokenizer.json"):
        if (tmp_path / "run" / f).is_file():
            assert json.loads((tmp_path / "run" / f).read_text()) == json.loads((tmp_path / "again" / f).read_text())


def test_a_post_norm_sentencepiece_run_trained_by_tx_exports(tmp_path):
    from txcli.commands.train import train
    from txcli.schema import load_recipe

    torch.set_num_threads(1)
    make_corpus(tmp_path)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE.format(kind="sentencepiece", joint="false"), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml", ["model.norm=post", "model.activation=silu", "model.output_bias=true",
                                                    "train.max_steps=10", "train.eval_every=10"])
    train(recipe)
    export_huggingface(recipe.run_dir, tmp_path / "out")
    model, tok = load_exported(tmp_path / "out")
    run = open_run(recipe.run_dir, "cpu")
    assert hf_outputs(model, tok, 1) == tx_outputs(run, 1)
    # the logits, column for column (tx's <pad> row has no Marian counterpart)
    vocab = json.loads((tmp_path / "out" / "target_vocab.json").read_text())
    specials = {"</s>": EOS_ID, "<unk>": 1, "<pad>": BOS_ID}  # Marian's <pad> is the decoder start: tx's <s>
    columns = torch.tensor([specials[t] if t in specials else run.tgt_tok.lookup[t] for t, _ in
                            sorted(vocab.items(), key=lambda kv: kv[1])])
    batch = tok(SOURCES[:2], text_target=["THE DOG", "CAT"], padding=True, return_tensors="pt")
    start = torch.full((2, 1), model.config.decoder_start_token_id)
    dec_in = torch.cat([start, batch["labels"][:, :-1]], 1)
    with torch.no_grad():
        theirs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec_in).logits
        rows = [run.src_tok.encode(s) + [EOS_ID] for s in SOURCES[:2]]
        width = max(map(len, rows))
        tgt_rows = [([BOS_ID] + run.tgt_tok.encode(t) + [EOS_ID])[:dec_in.size(1)] for t in ["THE DOG", "CAT"]]
        mine = run.model(torch.tensor([r + [0] * (width - len(r)) for r in rows]),
                         torch.tensor([r + [0] * (dec_in.size(1) - len(r)) for r in tgt_rows]))
    real = dec_in != model.config.pad_token_id
    real[:, 0] = True
    assert batch["labels"].tolist()[0][:-1] == [vocab[run.tgt_tok.id_to_token(i)] for i in tgt_rows[0][1:]]
    assert torch.allclose(mine[..., columns][real], theirs[real], atol=1e-4)


def test_pre_norm_and_other_tokenizers_are_refused_in_one_line(tmp_path):
    from txcli.commands.train import train
    from txcli.schema import load_recipe

    make_corpus(tmp_path)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE.format(kind="bpe", joint="true"), encoding="utf-8")
    recipe = load_recipe(tmp_path / "recipe.yaml", ["train.max_steps=2", "train.eval_every=2"])
    train(recipe)
    with pytest.raises(UsageError, match="model.norm is pre: Marian layers are post-norm.*train with model.norm: post") as err:
        export_huggingface(recipe.run_dir, tmp_path / "out")
    assert "\n" not in str(err.value) and not (tmp_path / "out").exists()
    recipe.model.norm = "post"
    (recipe.run_dir / "recipe.yaml").write_text((recipe.run_dir / "recipe.yaml").read_text().replace("norm: pre", "norm: post"))
    with pytest.raises(UsageError, match="tokenizer.kind is bpe: MarianTokenizer reads sentencepiece"):
        export_huggingface(recipe.run_dir, tmp_path / "out")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "mine.txt").write_text("x")
    with pytest.raises(UsageError, match="exists and is not an earlier tx Hugging Face export"):
        export_huggingface(recipe.run_dir, tmp_path / "taken")
