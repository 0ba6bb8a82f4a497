"""The sentencepiece tokenizer kind: trained by tx, loaded from a .model, and imported from a
Marian directory, where it must segment exactly as transformers' MarianTokenizer does."""

import json

import pytest
import sentencepiece as spm

from txcli.errors import UsageError
from txcli.marian import read_config, tokenizers
from txcli.schema import load_recipe
from txcli.sentencepiece_tokenizer import load_model_file
from txcli.tokenizer import EOS_ID, SPECIALS, load_tokenizer, train_tokenizer

from .marian_models import LANGUAGE_CODES, SRC_WORDS, TGT_WORDS, lines, make_marian_dir, train_spm

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

HARD = ["the dog sees 2024 cats!!!", "  leading and trailing  ", "€ unknown ☃ characters ü ß",
        "don't... ?!?! ,,", ">>deu<< the dog", ">>xyz<< an unknown code", "the </s> dog <unk> x<pad>y",
        "tab\tand\nnewline", "ＦＵＬＬＷＩＤＴＨ １２３ ﬁ", "a>>deu<<b >>fra<<", "3.5 2024 0000 007",
        " ", "", "</s>", ">>deu<<", "Der Hund läuft, groß & klein."]


@pytest.fixture(scope="module")
def marian_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("marian")
    return {"shared": make_marian_dir(root / "shared"),
            "separate": make_marian_dir(root / "separate", shared=False, tied=False)}


def tx_side(hf_dir):
    shape = read_config(json.loads((hf_dir / "config.json").read_text()), "config.json")
    return tokenizers(hf_dir, shape)


@pytest.mark.parametrize("layout", ["shared", "separate"])
def test_ids_equal_marian_tokenizers_after_the_remap(marian_dirs, layout):
    from transformers import MarianTokenizer

    hf_dir = marian_dirs[layout]
    hf = MarianTokenizer.from_pretrained(hf_dir)
    (src_tok, tgt_tok), (src_map, tgt_map) = tx_side(hf_dir)
    for tok, remap, target in ((src_tok, src_map, False), (tgt_tok, tgt_map, True)):
        for text in HARD + lines(TGT_WORDS if target else SRC_WORDS, 30, 7):
            theirs = hf(text_target=text)["input_ids"] if target else hf(text)["input_ids"]
            tx_id = {m: t for t, m in enumerate(remap.order) if t != 2}  # Marian id -> tx id
            assert tok.encode(text) + [EOS_ID] == [tx_id[i] for i in theirs], (layout, target, text)
            # the same cut: MarianTokenizer names a piece it lacks <unk>, tx keeps the piece
            names = {i: p for p, i in (hf.target_encoder if target and layout == "separate" else hf.encoder).items()}
            assert [p if p in remap.lookup else "<unk>" for p in tok.tokens(text)] == [names[i] for i in theirs[:-1]]
        assert tok.encode_batch(HARD) == [tok.encode(t) for t in HARD]


@pytest.mark.parametrize("layout", ["shared", "separate"])
def test_decoding_equals_marian_tokenizers(marian_dirs, layout):
    from transformers import MarianTokenizer

    hf_dir = marian_dirs[layout]
    hf = MarianTokenizer.from_pretrained(hf_dir)
    (_, tgt_tok), (_, tgt_map) = tx_side(hf_dir)
    for text in HARD + lines(TGT_WORDS, 30, 8):
        theirs = hf(text_target=text)["input_ids"]
        tx_id = {m: t for t, m in enumerate(tgt_map.order) if t != 2}
        mine = [tx_id[i] for i in theirs]
        assert tgt_tok.decode(mine) == hf.decode(theirs, skip_special_tokens=True), text


def test_the_remap_puts_tx_specials_first_and_keeps_every_marian_token(marian_dirs):
    hf_dir = marian_dirs["shared"]
    vocab = json.loads((hf_dir / "vocab.json").read_text())
    (src_tok, tgt_tok), (_, tgt_map) = tx_side(hf_dir)
    assert tgt_map.names[:4] == SPECIALS and tgt_tok.vocab_size == len(vocab) + 1
    pad = vocab["<pad>"]
    assert tgt_map.order[:4] == [pad, vocab["<unk>"], pad, vocab["</s>"]]  # <s> = Marian's start row
    assert sorted(set(tgt_map.order)) == list(range(len(vocab)))
    assert tgt_map.lookup["<pad>"] == 0 and tgt_map.lookup["</s>"] == 3 and tgt_map.lookup["<unk>"] == 1
    assert src_tok.language_codes() == sorted(LANGUAGE_CODES)


def test_file_round_trip_keeps_both_sides_models(marian_dirs, tmp_path):
    (src_tok, tgt_tok), _ = tx_side(marian_dirs["shared"])
    src_tok.save(tmp_path / "tokenizer.json")
    again_src, again_tgt = load_tokenizer(tmp_path / "tokenizer.json", "src"), load_tokenizer(tmp_path / "tokenizer.json", "tgt")
    for text in HARD:
        assert again_src.encode(text) == src_tok.encode(text)
        assert again_tgt.encode(text) == tgt_tok.encode(text)
    assert again_src.models["src"] != again_src.models["tgt"]  # source.spm and target.spm differ


def test_trained_kind_reserves_tx_specials_and_round_trips(tmp_path):
    tok = train_tokenizer(iter(lines(SRC_WORDS, 300, 3)), "sentencepiece", 60)
    assert [tok.id_to_token(i) for i in range(4)] == SPECIALS
    sp = spm.SentencePieceProcessor(model_proto=tok.models["src"])
    text = "The dog sees the big cat."
    assert tok.encode(text) == sp.encode(text)  # trained with tx's ids: the model's own ids
    assert tok.decode(tok.encode(text)) == text
    tok.save(tmp_path / "t.json")
    assert load_tokenizer(tmp_path / "t.json").encode_batch([text, "x y"]) == tok.encode_batch([text, "x y"])


def test_an_impossible_vocabulary_size_is_one_line():
    with pytest.raises(UsageError, match="tokenizer: sentencepiece could not train.*vocab") as err:
        train_tokenizer(iter(lines(SRC_WORDS, 300, 3) + ["ü é ß ☃ ñ ø å æ œ ç"]), "sentencepiece", 16)
    assert "\n" not in str(err.value)


def test_lowercase_folds_case(tmp_path):
    tok = train_tokenizer(iter(lines(SRC_WORDS, 300, 3)), "sentencepiece", 60, lowercase=True)
    assert tok.encode("THE DOG") == tok.encode("the dog")


def test_an_existing_model_file_gets_tx_specials_at_0_to_3(tmp_path):
    model = train_spm(lines(SRC_WORDS, 300, 4), 50)  # sentencepiece's own ids: <unk>=0, <s>=1, </s>=2
    (tmp_path / "x.model").write_bytes(model)
    tok = load_model_file(tmp_path / "x.model")
    sp = spm.SentencePieceProcessor(model_proto=model)
    assert [tok.id_to_token(i) for i in range(4)] == SPECIALS
    text = "the red dog sleeps ☃"
    assert [tok.id_to_token(i) for i in tok.encode(text)] == [
        p if sp.piece_to_id(p) != sp.unk_id() else "<unk>" for p in sp.encode(text, out_type=str)]
    (tmp_path / "bad.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="bad.model"):
        load_model_file(tmp_path / "bad.model")


def test_recipe_trains_or_loads_a_sentencepiece_tokenizer(tiny_recipe, tmp_path):
    from txcli.commands.run import load_tokenizers, train_tokenizers

    recipe = load_recipe(tiny_recipe, ["tokenizer.kind=sentencepiece"])
    train_tokenizers(recipe)
    src, tgt = load_tokenizers(recipe.run_dir, True)
    assert src.vocab_size <= 64 and src.encode("the dog") == tgt.encode("the dog")
    (tmp_path / "given.model").write_bytes(train_spm(lines(SRC_WORDS, 300, 5), 60))
    recipe = load_recipe(tiny_recipe, ["tokenizer.kind=sentencepiece", f"tokenizer.model={tmp_path / 'given.model'}",
                                       f"run_dir={tmp_path / 'run2'}"])
    train_tokenizers(recipe)
    src, _ = load_tokenizers(recipe.run_dir, True)
    assert src.models["src"] == (tmp_path / "given.model").read_bytes()


@pytest.mark.parametrize("sets, message", [
    (["tokenizer.model=x.model"], "tokenizer.*needs kind: sentencepiece"),
    (["tokenizer.kind=sentencepiece", "tokenizer.model=nowhere.model"], "tokenizer.model: file not found"),
])
def test_recipe_refuses_bad_tokenizer_settings_in_one_line(tiny_recipe, sets, message):
    with pytest.raises(UsageError, match=message) as err:
        load_recipe(tiny_recipe, sets)
    assert "\n" not in str(err.value)
