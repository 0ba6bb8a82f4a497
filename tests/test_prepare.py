"""tx prepare and its memory-mapped cache: what it holds equals tokenizing the kept pairs; a stale
cache (a source file, the tokenizer or a filter changed) and a damaged one (truncated array,
broken manifest or offsets, a half-written cache) are refused with one line naming what or which
file; the counts tx prepare prints."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, make_corpus, run_tx
from txcli.commands.run import load_tokenizers
from txcli.errors import TxError, UsageError

RECIPE = """\
name: prep
run_dir: run
seed: 1
data:
  train:
    - {{name: clean, src: train.src, tgt: train.tgt, weight: 3}}
    - {{name: bt, path: bt.tsv, weight: 1, tag: "<bt>", filters: {{duplicates: true}}}}
  valid: {{src: train.src, tgt: train.tgt}}
  max_len: 80
{extra}
tokenizer: {{kind: bpe, vocab_size: 64, joint: true, min_frequency: 1}}
model: {{d_model: 32, heads: 4, ff: 64, encoder_layers: 2, decoder_layers: 2, dropout: 0.0}}
train: {{batch_tokens: 256, max_steps: 20, compile: false}}
"""
LONG = " ".join(["the big red dog sees a small green cat"] * 16)  # far over max_len 80 subwords


def write_data(folder: Path) -> None:
    """clean: 200 pairs + an empty source and a pair too long; bt: 40 pairs, each twice, + one empty target."""
    make_corpus(folder)
    with open(folder / "train.src", "a", encoding="utf-8") as s, open(folder / "train.tgt", "a", encoding="utf-8") as t:
        s.write("\n" + LONG + "\n")
        t.write("the cat\n" + LONG.upper() + "\n")
    rows = [line.split("\t") for line in _pairs_of(folder, 40, seed=5)]
    lines = [f"{a}\t{b}" for a, b in rows] + [f"{a}\t{b}" for a, b in rows[:10]] + ["a dog\t"]
    (folder / "bt.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _pairs_of(folder: Path, n: int, seed: int) -> list[str]:
    sub = folder / f"gen{seed}"
    sub.mkdir()
    src, tgt = make_corpus(sub, n, seed)
    return [f"{a}\t{b}" for a, b in zip(src.read_text().splitlines(), tgt.read_text().splitlines())]


def make_recipe(folder: Path, extra: str = "") -> Path:
    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(extra=extra), encoding="utf-8")
    return path


def load(path: Path, *overrides: str):
    from txcli.schema import load_recipe

    return load_recipe(path, list(overrides))


def with_tag(recipe) -> None:
    """The tokenizer trained, with the tag as one token (tokenizer training adds corpus tags once
    filters are merged; adding it again is a no-op)."""
    from txcli.commands.run import train_tokenizers
    from txcli.tokenizer import SubwordTokenizer

    (path,) = train_tokenizers(recipe)
    tok = SubwordTokenizer.load(path)
    tok.hf.add_special_tokens(["<bt>"])
    tok.save(path)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    write_data(tmp_path)
    return tmp_path


@pytest.fixture
def built(folder: Path):
    """A recipe and its cache, built."""
    from txcli.commands.prepare import prepare

    recipe = load(make_recipe(folder))
    with_tag(recipe)
    result = prepare(recipe)
    assert result.built
    return recipe, result


def open_cache(recipe):
    from txcli.commands.run import load_tokenizers
    from txcli.checkpoint import tokenizer_files
    from txcli.prepared import cache_directory, open_current

    src, tgt = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    return open_current(cache_directory(recipe.data, recipe.run_dir), recipe.data,
                        tokenizer_files(recipe.run_dir, recipe.tokenizer.joint), (src.vocab_size, tgt.vocab_size))


def expected_pairs(recipe, corpus):
    """Independently: the corpus's pairs kept and their ids, and what was dropped, as the filters say."""
    from txcli.commands.run import load_tokenizers
    from txcli.data import read_pairs

    tok, _ = load_tokenizers(recipe.run_dir, True)
    dedup = recipe.data.filters_of(corpus).duplicates
    seen, kept, dropped = set(), [], {}
    for s, t in read_pairs(corpus):
        if dedup and (s, t) in seen:
            reason = "duplicate"
        elif not s.strip() or not t.strip():
            reason = "empty"
        else:
            a, b = tok.encode(s), tok.encode(t)
            reason = "max_len" if max(len(a), len(b)) > recipe.data.max_len else None
        seen.add((s, t))
        if reason:
            dropped[reason] = dropped.get(reason, 0) + 1
        else:
            tag = [tok.get_vocab()[corpus.tag]] if corpus.tag else []
            kept.append((s, t, tag + a, b))
    return kept, dropped


def test_the_cache_holds_the_kept_pairs_tokenized(built):
    recipe, result = built
    data = open_cache(recipe)
    assert [c.name for c in data.corpora] == ["clean", "bt"]
    for corpus, prepared in zip(recipe.data.corpora(), data.corpora):
        kept, dropped = expected_pairs(recipe, corpus)
        assert len(prepared) == len(kept)
        assert prepared.counts.to_dict() == {"read": prepared.counts.read, "kept": len(kept), "dropped": dropped}
        pool = prepared.take(np.arange(len(prepared)))
        for i, (_, _, src, tgt) in enumerate(kept):
            assert pool.src_ids[pool.src_start[i]:pool.src_start[i] + pool.src_len[i]].tolist() == src
            assert pool.tgt_ids[pool.tgt_start[i]:pool.tgt_start[i] + pool.tgt_len[i]].tolist() == tgt
        index = np.array([len(kept) - 1, 0, 3, 3])  # any order, repeats: a pool of the training schedule
        some = prepared.take(index)
        assert [some.src_ids[some.src_start[j]:some.src_start[j] + some.src_len[j]].tolist() for j in range(4)] == \
            [kept[i][2] for i in index]
        batch = some.make_batch(np.arange(4))
        assert batch.src[0, :len(kept[-1][2])].tolist() == kept[-1][2]
    clean, bt = data.corpora
    assert clean.counts.dropped == {"empty": 1, "max_len": 1} and clean.counts.read == 202
    assert bt.counts.dropped == {"duplicate": 10, "empty": 1} and bt.counts.read == 51
    assert {c.name: c.counts.kept for c in result.corpora} == {"clean": 200, "bt": 40}
    with pytest.raises(TxError, match="keeps no text"):
        clean.texts([0])


def mapped_kb(directory: Path) -> int:
    """Resident kB of this process's maps of files under `directory` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5].startswith(str(directory))
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_the_caches_pages_leave_the_process_once_read(built):
    """Opening checks every id and a pool copies its pairs out: the cache's pages must not stay
    counted in training's memory (on a 3M-pair corpus that is the whole cache, for the whole run)."""
    recipe, _ = built
    data = open_cache(recipe)
    assert mapped_kb(data.directory) == 0
    clean = data.corpora[0]
    pool = clean.take(np.arange(len(clean)))
    assert len(pool) == len(clean) and mapped_kb(data.directory) == 0
    assert int(clean.src_ids[0]) >= 0 and mapped_kb(data.directory) > 0  # a read maps the page again


def test_a_cache_for_sampling_keeps_the_text(folder: Path):
    from txcli.commands.prepare import prepare

    recipe = load(make_recipe(folder, "  sampling: {dropout: 0.1}"))
    with_tag(recipe)
    prepare(recipe)
    data = open_cache(recipe)
    for corpus, prepared in zip(recipe.data.corpora(), data.corpora):
        kept, _ = expected_pairs(recipe, corpus)
        assert prepared.texts([2, 0, len(kept) - 1]) == [kept[i][:2] for i in (2, 0, len(kept) - 1)]


def test_a_current_cache_is_kept_and_a_stale_one_rebuilt(built):
    from txcli.commands.prepare import prepare

    recipe, first = built
    again = prepare(recipe)
    assert not again.built and [c.counts.to_dict() for c in again.corpora] == [c.counts.to_dict() for c in first.corpora]
    assert prepare(recipe, force=True).rebuilt_because == "--force"
    changed = load(recipe_path(recipe), "data.max_len=20")
    result = prepare(changed)
    assert result.built and "data.max_len changed since tx prepare (80 -> 20)" in result.rebuilt_because
    assert open_cache(changed).corpora[0].counts.dropped["max_len"] > 1


BT = '\n    - {name: bt, path: bt.tsv, weight: 1, tag: "<bt>", filters: {duplicates: true}}'


def variant(path: Path, old: str, new: str):
    """The recipe at `path` with `old` replaced by `new`, beside it (same run directory)."""
    text = path.read_text(encoding="utf-8")
    assert old in text
    other = path.with_name("variant.yaml")
    other.write_text(text.replace(old, new), encoding="utf-8")
    return load(other)


def recipe_path(recipe) -> Path:
    return recipe.run_dir.parent / "recipe.yaml"


def stale_message(recipe) -> str:
    with pytest.raises(UsageError) as caught:
        open_cache(recipe)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("rerun tx prepare")
    return message


def test_a_changed_source_file_makes_the_cache_stale(built, folder: Path):
    recipe, _ = built
    src = folder / "train.src"
    text = src.read_text()
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # touched, same bytes
    assert len(open_cache(recipe).corpora[0]) == 200
    src.write_text(text.replace("dog", "cat", 1))  # same size, new content
    assert f"stale cache: data.train.0.src ({src}) changed since tx prepare" in stale_message(recipe)
    (folder / "bt.tsv").write_text((folder / "bt.tsv").read_text() + "one\tmore\n")
    src.write_text(text)
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 2 * 10**9))
    assert f"data.train.1.path ({folder / 'bt.tsv'}) changed since tx prepare" in stale_message(recipe)


def test_a_changed_tokenizer_or_filter_makes_the_cache_stale(built):
    from txcli.tokenizer import SubwordTokenizer

    recipe, _ = built
    path = recipe_path(recipe)
    assert "data.filters.max_ratio changed since tx prepare (None -> 2.0)" in \
        stale_message(load(path, "data.filters.max_ratio=2"))
    assert "data.train.1.filters.duplicates changed since tx prepare (True -> False)" in \
        stale_message(variant(path, "duplicates: true", "duplicates: false"))
    assert "data.train.1.tag changed since tx prepare ('<bt>' -> '<x>')" in stale_message(variant(path, '"<bt>"', '"<x>"'))
    assert "corpus 'bt' is gone" in stale_message(variant(path, BT, ""))
    tok_path = recipe.run_dir / "tokenizer.json"
    tok = SubwordTokenizer.load(tok_path)
    tok.hf.add_special_tokens(["<new>"])
    tok.save(tok_path)
    assert f"the tokenizer ({tok_path}) changed since tx prepare" in stale_message(recipe)


def test_another_run_directory_with_the_same_tokenizer_uses_the_cache(built, tmp_path: Path):
    """data.prepared shared by several runs (a sweep): the tokenizer's content decides, not its path."""
    import shutil

    from txcli.tokenizer import SubwordTokenizer

    recipe, result = built
    other = tmp_path / "sweep-run"
    other.mkdir()
    shutil.copy(recipe.run_dir / "tokenizer.json", other / "tokenizer.json")
    sweep = load(recipe_path(recipe), f"run_dir={other}", f"data.prepared={result.directory}")
    assert [len(c) for c in open_cache(sweep).corpora] == [len(c) for c in open_cache(recipe).corpora]
    tok = SubwordTokenizer.load(other / "tokenizer.json")
    tok.hf.add_special_tokens(["<new>"])
    tok.save(other / "tokenizer.json")
    assert f"the tokenizer ({other / 'tokenizer.json'}) changed since tx prepare" in stale_message(sweep)


def damaged_message(recipe) -> str:
    with pytest.raises(TxError) as caught:
        open_cache(recipe)
    assert not isinstance(caught.value, UsageError)
    message = str(caught.value)
    assert "\n" not in message and message.endswith("rerun tx prepare")
    return message


def test_a_truncated_array_is_refused_naming_the_file(built):
    recipe, result = built
    ids = result.directory / "bt.tgt_ids"
    data = ids.read_bytes()
    ids.write_bytes(data[:-2])
    assert damaged_message(recipe).startswith(f"{ids}: {len(data) - 2} bytes where the manifest says {len(data)}")
    ids.unlink()
    assert damaged_message(recipe).startswith(f"{ids}: missing from the cache")


def test_damaged_offsets_ids_and_manifest_are_refused_naming_the_file(built):
    recipe, result = built
    offsets = result.directory / "clean.src_offsets"
    good = offsets.read_bytes()
    values = np.frombuffer(good, dtype="<i8").copy()
    values[5], values[6] = values[6], values[5]  # not rising any more
    offsets.write_bytes(values.tobytes())
    assert damaged_message(recipe).startswith(f"{offsets}: damaged: offsets must rise")
    values = np.frombuffer(good, dtype="<i8").copy()
    values[-1] += 1  # past the end of the ids
    offsets.write_bytes(values.tobytes())
    assert damaged_message(recipe).startswith(f"{offsets}: damaged")
    offsets.write_bytes(good)
    ids = result.directory / "clean.tgt_ids"
    values = np.frombuffer(ids.read_bytes(), dtype="<u2").copy()
    values[3] = 60000
    ids.write_bytes(values.tobytes())
    vocab = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)[1].vocab_size
    assert damaged_message(recipe).startswith(f"{ids}: damaged: ids outside the vocabulary of {vocab}")

    manifest = result.directory / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    assert damaged_message(recipe).startswith(f"{manifest}: damaged JSON")
    plan = json.loads(text)
    plan["corpora"][0]["arrays"]["src_ids"]["file"] = "../../etc/passwd"
    manifest.write_text(json.dumps(plan))
    assert damaged_message(recipe).startswith(f"{manifest}: damaged (clean: src_ids file)")
    plan = json.loads(text)
    plan["corpora"][0]["arrays"]["src_ids"]["count"] += 1000
    manifest.write_text(json.dumps(plan))
    assert "clean.src_ids: " in damaged_message(recipe)


KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from txcli.commands.run import load_tokenizers
from txcli.checkpoint import tokenizer_files
from txcli.corpus_encoder import CorpusEncoder, flat_encoders
from txcli.data import read_pairs
from txcli.prepared import PairFilters, cache_directory, manifest_for, recipe_facts, write_prepared
from txcli.schema import load_recipe

recipe = load_recipe(Path(sys.argv[1]))
src, tgt = load_tokenizers(recipe.run_dir, True)
paths = tokenizer_files(recipe.run_dir, True)
built_from = manifest_for(recipe_facts(recipe.data, paths, (src.vocab_size, tgt.vocab_size)))
corpus = recipe.data.corpora()[0]

class Dies(CorpusEncoder):
    def chunks(self):
        for i, chunk in enumerate(super().chunks()):
            if i == 3:
                os.kill(os.getpid(), signal.SIGKILL)  # as a kill -9 in the middle of the write
            yield chunk

source = Dies(corpus.name, read_pairs(corpus), PairFilters(recipe.data.filters, 80), *flat_encoders(src, tgt), chunk=16)
write_prepared(cache_directory(recipe.data, recipe.run_dir), [source], built_from)
"""


def test_a_half_written_cache_never_opens(folder: Path):
    from txcli.commands.prepare import prepare
    from txcli.prepared import open_prepared

    path = folder / "recipe.yaml"
    path.write_text(RECIPE.format(extra="").replace(BT, ""), encoding="utf-8")
    recipe = load(path)
    with_tag(recipe)

    def killed_write():
        done = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == -signal.SIGKILL, done.stderr

    killed_write()
    cache = recipe.run_dir / "prepared"
    assert not cache.exists()
    (leftover,) = recipe.run_dir.glob(".prepared.*.tmp")
    with pytest.raises(UsageError, match="no tx prepare cache here"):
        open_cache(recipe)
    with pytest.raises(TxError, match=f"{leftover / 'manifest.json'}: missing: .* is not a complete tx prepare cache"):
        open_prepared(leftover, {})
    result = prepare(recipe)
    assert result.leftovers == 1 and not list(recipe.run_dir.glob(".prepared.*"))
    killed_write()  # over a good cache: the old one stays whole
    assert len(open_cache(recipe).corpora[0]) == 200


def test_a_bad_corpus_is_one_line_naming_it_and_leaves_no_cache(folder: Path):
    from txcli.commands.prepare import prepare

    recipe = load(make_recipe(folder))
    with_tag(recipe)
    (folder / "bt.tsv").write_text("a\tb\n" * 20000 + "no tab here\n", encoding="utf-8")  # the bad line in a later chunk
    with pytest.raises(UsageError, match=f"^{folder / 'bt.tsv'}: line 20001: expected 'source<TAB>target'"):
        prepare(recipe)
    assert not (recipe.run_dir / "prepared").exists() and not list(recipe.run_dir.glob(".prepared*"))


def test_tx_prepare_prints_its_counts(folder: Path):
    make_recipe(folder)
    recipe = load(folder / "recipe.yaml")
    with_tag(recipe)
    done = run_tx("prepare", "recipe.yaml", cwd=folder)
    assert done.returncode == 0, done.stderr
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:6]]
            for line in done.stdout.splitlines() if line.count("│") > 5}
    assert rows["clean"] == ["202", "200", "empty 1, max_len 1", rows["clean"][3]]
    assert rows["bt"][:3] == ["51", "40", "duplicate 10, empty 1"] and float(rows["bt"][3].replace(",", "")) > 0
    assert f"wrote {folder / 'run' / 'prepared'}" in done.stderr
    again = run_tx("prepare", "recipe.yaml", "--set", "data.filters.min_chars=2", cwd=folder)
    assert again.returncode == 0, again.stderr
    assert "rebuilt: " in again.stderr and "data.filters.min_chars changed since tx prepare (None -> 2)" in again.stderr
    same = run_tx("prepare", "recipe.yaml", "--set", "data.filters.min_chars=2", cwd=folder)
    assert "is current" in same.stderr, same.stderr


def test_training_reads_the_cache_and_refuses_a_stale_one(built):
    """With a cache, the training stream takes its pairs from it (no corpus text read: the
    source files may even be unreadable), and the same batches come from tx train's stream;
    after a source file changes, training stops in one line telling to rerun tx prepare."""
    from txcli.commands.run import load_tokenizers
    from txcli.commands.train_data import training_stream
    from txcli.pools import PreparedPools

    recipe, result = built
    src, tgt = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    stream = training_stream(recipe, src, tgt, prefetch=False)
    assert isinstance(stream.pools, PreparedPools)
    cache = open_cache(recipe)
    kept = {name: set() for name in ("clean", "bt")}
    for corpus in cache.corpora:
        pairs = corpus.take(np.arange(len(corpus)))
        for i in range(len(corpus)):
            s0, t0 = pairs.src_start[i], pairs.tgt_start[i]
            kept[corpus.name].add((tuple(pairs.src_ids[s0:s0 + pairs.src_len[i]]), tuple(pairs.tgt_ids[t0:t0 + pairs.tgt_len[i]])))
    every = kept["clean"] | kept["bt"]
    text = recipe.run_dir.parent / "train.src"
    text.rename(text.with_name("away.src"))  # nothing may read the text any more
    try:
        seen = 0
        for batch, _ in itertools.islice(stream.epoch(1), 5):
            for row in range(batch.src.shape[0]):
                s = [int(i) for i in batch.src[row] if int(i) not in (0, 3)]
                t = [int(i) for i in batch.tgt_out[row] if int(i) not in (0, 3)]
                assert (tuple(s), tuple(t)) in every
                seen += 1
        assert seen > 0
    finally:
        text.with_name("away.src").rename(text)

    with open(recipe.run_dir.parent / "train.src", "a", encoding="utf-8") as f:
        f.write("one more line\n")
    with open(recipe.run_dir.parent / "train.tgt", "a", encoding="utf-8") as f:
        f.write("eine zeile mehr\n")
    with pytest.raises(UsageError, match="rerun tx prepare"):
        training_stream(load(recipe.run_dir.parent / "recipe.yaml"), src, tgt, prefetch=False)


def test_data_prepared_pointing_nowhere_is_one_line(folder: Path):
    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.commands.train_data import training_stream

    recipe = load(make_recipe(folder, extra=f"  prepared: {folder / 'nocache'}"))
    train_tokenizers(recipe)
    src, tgt = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    with pytest.raises(UsageError, match=r"data.prepared: .*nocache: no tx prepare cache there; run tx prepare"):
        training_stream(recipe, src, tgt, prefetch=False)


def test_training_from_the_cache_mixes_a_corpus_of_two_halves_from_the_first_batches(built):
    """The cache keeps file order; training takes its pools from the schedule over the whole of
    it, so a corpus made of two halves trains on both from the first batches."""
    from txcli.commands.run import load_tokenizers
    from txcli.commands.train_data import training_stream

    recipe, _ = built
    recipe = load(recipe.run_dir.parent / "recipe.yaml", "train.pool_size=40", "data.train.0.weight=1")
    (clean,) = [c for c in open_cache(recipe).corpora if c.name == "clean"]
    pairs = clean.take(np.arange(len(clean)))
    half = {}
    for i in range(len(clean)):
        s0 = pairs.src_start[i]
        half.setdefault(tuple(pairs.src_ids[s0:s0 + pairs.src_len[i]].tolist()), i < len(clean) // 2)
    src, tgt = load_tokenizers(recipe.run_dir, recipe.tokenizer.joint)
    stream = training_stream(recipe, src, tgt, prefetch=False)
    halves = set()
    for batch, _ in itertools.islice(stream.epoch(1), 3):
        for row in batch.src.tolist():
            ids = tuple(i for i in row if i not in (0, 3))
            if ids in half:
                halves.add(half[ids])
    stream.close()
    assert halves == {True, False}
