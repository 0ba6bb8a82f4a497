from __future__ import annotations

from pathlib import Path

import pytest

from txcli.commands.run import load_tokenizers, train_tokenizers
from txcli.schema import load_recipe
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, SubwordTokenizer, train_tokenizer

from .conftest import run_tx

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich, sagte sie!",
    "naïve café — 3.14 + 2 = 5.14 (roughly)",
] * 20


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece"])
def test_train_encode_decode_round_trip(kind: str, tmp_path: Path):
    tok = train_tokenizer(iter(TEXT), kind, vocab_size=120, min_frequency=1)
    assert [tok.hf.token_to_id(t) for t in ("<pad>", "<unk>", "<s>", "</s>")] == [PAD_ID, UNK_ID, BOS_ID, EOS_ID]
    for line in TEXT[:3]:
        ids = tok.encode(line)
        assert ids and min(ids) >= 4  # no special ids inside a sentence
        assert tok.decode(ids) == line
    tok.save(tmp_path / "t.json")
    again = SubwordTokenizer.load(tmp_path / "t.json")
    assert again.encode(TEXT[1]) == tok.encode(TEXT[1])
    assert again.decode(tok.encode(TEXT[1]) + [EOS_ID, PAD_ID]) == TEXT[1]


def test_recipe_joint_and_separate(tiny_recipe: Path):
    r = load_recipe(tiny_recipe)
    assert [p.name for p in train_tokenizers(r)] == ["tokenizer.json"]
    r2 = load_recipe(tiny_recipe, ["tokenizer.joint=false", "tokenizer.kind=unigram"])
    assert [p.name for p in train_tokenizers(r2)] == ["src_tokenizer.json", "tgt_tokenizer.json"]
    src_tok, tgt_tok = load_tokenizers(r2.run_dir, joint=False)
    # the target side is upper-case only: its vocabulary holds no lower-case word of the source
    assert "DOG" in tgt_tok.decode(tgt_tok.encode("DOG")) and src_tok.vocab_size > 4


def test_cli_train_tokenizer_writes_into_run_dir(tiny_recipe: Path):
    result = run_tx("train-tokenizer", str(tiny_recipe))
    assert result.returncode == 0, result.stderr
    path = tiny_recipe.parent / "run" / "tokenizer.json"
    assert path.is_file() and f"wrote {path}" in result.stderr
    tok = SubwordTokenizer.load(path)
    assert tok.decode(tok.encode("the big dog sees a cat")) == "the big dog sees a cat"


def test_broken_tokenizer_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    from txcli.errors import TxError

    with pytest.raises(TxError, match="tokenizer.json: not a valid tokenizer file"):
        load_tokenizers(tmp_path, joint=True)
