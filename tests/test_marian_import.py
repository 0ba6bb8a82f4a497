"""`tx import marian`: tiny Marian models made with transformers (random weights), imported, then
compared with transformers itself: logits, greedy and beam search. And every refusal in one line."""

import json
import pickle
import shutil

import pytest
import torch

from txcli.commands.import_marian import import_marian
from txcli.commands.run import open_run
from txcli.errors import UsageError
from txcli.marian import marian_positions, permutation
from txcli.model import sinusoidal_positions
from txcli.search import SearchConfig, beam_search
from txcli.tokenizer import BOS_ID, EOS_ID

from .marian_models import load_hf, make_marian_dir

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

SOURCES = ["The dog sees the big cat.", "a small red house", "Green trees sleep with 2024 dogs!", "in"]
SHAPES = {
    "shared-tied": dict(),
    "separate-untied-3heads-bin": dict(shared=False, tied=False, heads=3, d_model=18, weights="bin"),
    "shared-untied-5heads": dict(tied=False, heads=5, d_model=20, layers=(1, 3)),
    "separate-tied-relu": dict(shared=False, tied=True, activation="relu", layers=(3, 1)),
}


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """name -> (hf_dir, run_dir, hf model, hf tokenizer)"""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("import")
    out = {}
    for i, (name, shape) in enumerate(SHAPES.items()):
        hf_dir = make_marian_dir(root / name, seed=i, **shape)
        import_marian(hf_dir, root / f"{name}-run")
        out[name] = (hf_dir, root / f"{name}-run", *load_hf(hf_dir))
    return out


def tx_ids(run, hf_dir, side="tgt"):
    """Marian id -> tx id on one side, by token (tx's <s> row is never a Marian id of its own)."""
    tok = run.tgt_tok if side == "tgt" else run.src_tok
    name = "target_vocab.json" if side == "tgt" and (hf_dir / "target_vocab.json").is_file() else "vocab.json"
    return {m: tok.lookup[piece] for piece, m in json.loads((hf_dir / name).read_text()).items()}


def test_the_permutation_turns_marian_positions_into_tx_positions_exactly():
    for d in (2, 16, 18, 512):
        perm = permutation(d)
        assert sorted(perm.tolist()) == list(range(d))
        assert torch.equal(marian_positions(300, d)[:, perm], sinusoidal_positions(300, d))


@pytest.mark.parametrize("name", list(SHAPES))
def test_logits_equal_transformers(imported, name):
    hf_dir, run_dir, hf, hf_tok = imported[name]
    run = open_run(run_dir, "cpu")
    to_tx = tx_ids(run, hf_dir)
    src_tx = [run.src_tok.encode(s) + [EOS_ID] for s in SOURCES]
    batch = hf_tok(SOURCES, text_target=["Der Hund sieht die Katze.", "ein kleines Haus", "grün", "x"],
                   padding=True, return_tensors="pt")
    labels = batch["labels"].masked_fill(batch["labels"] == hf.config.pad_token_id, hf.config.pad_token_id)
    start = torch.full((len(SOURCES), 1), hf.config.decoder_start_token_id)
    dec_in = torch.cat([start, labels[:, :-1]], dim=1)
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], decoder_input_ids=dec_in).logits
        width = max(map(len, src_tx))
        src = torch.tensor([r + [0] * (width - len(r)) for r in src_tx])
        src_to_tx = tx_ids(run, hf_dir, "src")
        assert src.tolist() == [[src_to_tx[i] for i in row] for row in batch["input_ids"].tolist()]
        tgt_in = torch.tensor([[BOS_ID] + [to_tx[i] for i in row[1:]] for row in dec_in.tolist()])
        mine = run.model(src, tgt_in)
    to_tx[hf.config.pad_token_id] = BOS_ID  # Marian's <pad> logit is tx's <s> one; tx's <pad> is switched off
    columns = torch.tensor([to_tx[m] for m in range(theirs.size(-1))])
    assert (mine[..., 0] < mine[..., BOS_ID] - 50).all()
    assert torch.allclose(torch.log_softmax(mine, -1)[..., columns], torch.log_softmax(theirs, -1), atol=1e-4)
    real = torch.cat([torch.ones(len(SOURCES), 1, dtype=torch.bool), labels[:, :-1] != hf.config.pad_token_id], 1)
    assert torch.allclose(mine[..., columns][real], theirs[real], atol=1e-4), (mine[..., columns][real] - theirs[real]).abs().max()


def _generate(hf, hf_tok, beams, max_new):
    batch = hf_tok(SOURCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = hf.generate(**batch, num_beams=beams, do_sample=False, length_penalty=0.0, max_new_tokens=max_new,
                          min_length=0, early_stopping=False, num_return_sequences=1)
    return out.tolist()


def _strip(row, to_tx, hf):
    """transformers' output row (start, tokens, </s>, padding) -> tx's tokens."""
    ids = row[1:]
    if hf.config.eos_token_id in ids:
        ids = ids[:ids.index(hf.config.eos_token_id)]
    return [to_tx[i] for i in ids]


@pytest.mark.parametrize("beams", [1, 4])
@pytest.mark.parametrize("name", list(SHAPES))
def test_search_equals_generate(imported, name, beams):
    hf_dir, run_dir, hf, hf_tok = imported[name]
    run = open_run(run_dir, "cpu")
    to_tx = tx_ids(run, hf_dir)
    L = 12
    theirs = [_strip(r, to_tx, hf) for r in _generate(hf, hf_tok, beams, L + 1)]
    rows = [run.src_tok.encode(s) + [EOS_ID] for s in SOURCES]
    width = max(map(len, rows))
    src = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    cfg = SearchConfig(beam=beams, alpha=0.0, max_len_a=0.0, max_len_b=L)
    mine = [h[0].tokens for h in beam_search(run.model, src, cfg, BOS_ID, EOS_ID)]
    assert mine == theirs


def test_recipe_and_record(imported):
    hf_dir, run_dir, hf, _ = imported["shared-tied"]
    from txcli.schema import read_saved_recipe

    recipe = read_saved_recipe(run_dir / "recipe.yaml")
    m = recipe.model
    assert (m.norm, m.activation, m.output_bias, m.tie_embeddings) == ("post", "silu", True, True)
    assert recipe.decode.beam == 4  # num_beams; max_length is not taken (tx's relative limit stays)
    assert (recipe.decode.max_len_a, recipe.decode.max_len_b) == (1.2, 10)
    assert recipe.tokenizer.kind == "sentencepiece" and recipe.tokenizer.joint
    record = json.loads((run_dir / "import.json").read_text())
    assert record["source"] == str(hf_dir.resolve()) and "model.safetensors" in record["files"]
    assert len(record["files"]["model.safetensors"]["sha256"]) == 64
    assert sorted(p.name for p in run_dir.iterdir()) == ["import.json", "model.safetensors", "recipe.yaml", "tokenizer.json"]


def test_a_planted_pickle_payload_never_runs(tmp_path):
    hf_dir = make_marian_dir(tmp_path / "evil", weights="bin")
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    state = torch.load(hf_dir / "pytorch_model.bin", weights_only=True)
    with open(hf_dir / "pytorch_model.bin", "wb") as f:  # a pickle whose loading would call open()
        pickle.dump({**state, "extra": Payload()}, f)
    with pytest.raises(UsageError, match="pytorch_model.bin: refused by torch's weights-only loader") as err:
        import_marian(hf_dir, tmp_path / "run")
    assert not marker.exists() and not (tmp_path / "run").exists()
    assert "\n" not in str(err.value)


def edit_config(hf_dir, **changes):
    config = json.loads((hf_dir / "config.json").read_text())
    config.update(changes)
    (hf_dir / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("change, message", [
    (dict(normalize_before=True), "normalize_before: True: pre-norm"),
    (dict(static_position_embeddings=False), "static_position_embeddings: False: learned positions"),
    (dict(decoder_attention_heads=4), "decoder_attention_heads: 4 differs from encoder_attention_heads 2"),
    (dict(decoder_ffn_dim=8), "decoder_ffn_dim"),
    (dict(activation_function="tanh"), "activation_function: 'tanh'"),
    (dict(scale_embedding=False), "scale_embedding"),
    (dict(model_type="bart"), "model_type: 'bart'"),
    (dict(vocab_size=17, decoder_vocab_size=17), "vocab.json: .* entries, but config.json vocab_size is 17"),
    (dict(encoder_layers=3), "missing weight 'model.encoder.layers.2"),
    (dict(encoder_layers=1), "unknown weight 'model.encoder.layers.1"),
    (dict(d_model=32), "model.shared.weight: shape"),
    (dict(encoder_ffn_dim=8, decoder_ffn_dim=8), r"model.encoder.layers.0.fc1.weight: shape \[24, 16\], expected \[8, 16\]"),
])
def test_unsupported_configs_are_refused_in_one_line_naming_the_field(tmp_path_factory, change, message):
    base = tmp_path_factory.getbasetemp() / "refusals-base"
    if not base.exists():
        make_marian_dir(base)
    hf_dir = tmp_path_factory.mktemp("refuse") / "m"
    shutil.copytree(base, hf_dir)
    edit_config(hf_dir, **change)
    run_dir = hf_dir.parent / "run"
    with pytest.raises(UsageError, match=message) as err:
        import_marian(hf_dir, run_dir)
    assert "\n" not in str(err.value) and not run_dir.exists()


def test_bpe_based_models_and_missing_files_are_refused(tmp_path):
    hf_dir = make_marian_dir(tmp_path / "m")
    (hf_dir / "source.spm").unlink()
    (hf_dir / "source.bpe").write_text("x")
    with pytest.raises(UsageError, match="source.spm: missing: BPE-based OPUS models are not supported"):
        import_marian(hf_dir, tmp_path / "run")
    with pytest.raises(UsageError, match="no such directory"):
        import_marian(tmp_path / "nowhere", tmp_path / "run")


def test_an_existing_run_is_never_overwritten(imported, tmp_path):
    hf_dir, run_dir, _, _ = imported["shared-tied"]
    before = (run_dir / "model.safetensors").read_bytes()
    with pytest.raises(UsageError, match="exists and is not empty"):
        import_marian(hf_dir, run_dir)
    assert (run_dir / "model.safetensors").read_bytes() == before


def test_a_failed_write_leaves_no_run(imported, tmp_path, monkeypatch):
    hf_dir = imported["shared-tied"][0]
    from txcli.commands import import_marian as module

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module, "save_model", broken)
    with pytest.raises(Exception, match="No space left"):
        import_marian(hf_dir, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temp left behind
