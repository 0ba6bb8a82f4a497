"""The training data pipeline: corpora read at random, pools from the weighted schedule, batches
by length, shares per rank, the data position a resume starts from, filter counts."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from txcli.filters import FilterCounts, PairFilters
from txcli.batching import BatchStream, EncodedPairs, EpochStats, encode_pairs, length_buckets
from txcli.corpora import CorpusIndex
from txcli.errors import UsageError
from txcli.pools import PreparedPools, TextPools
from txcli.schema.data import Corpus, Filters
from txcli.tokenizer import BOS_ID, EOS_ID, PAD_ID
from txcli.train_state import DataFeed, DataPosition

ID0 = 1000  # word "pN" -> id ID0 + N: every pair's source starts with its own id
TAG_A, TAG_B = 900, 901


def encode(texts):
    """Deterministic ids: pN -> ID0 + N, any other word 4 + its length."""
    return [[ID0 + int(w[1:]) if w[0] == "p" and w[1:].isdigit() else 4 + len(w) for w in t.split()] for t in texts]


def write_corpus(folder: Path, name: str, first: int, n: int, blank_every: int = 0) -> Corpus:
    """n pairs p{first}..p{first+n-1}, a few words each (lengths vary with the id)."""
    rng = np.random.default_rng(first)
    src, tgt = [], []
    for i in range(first, first + n):
        words = " ".join("w" * int(k) for k in rng.integers(1, 6, size=int(rng.integers(1, 7))))
        blank = blank_every and i % blank_every == 0
        src.append(f"p{i} {words}")
        tgt.append("" if blank else words)
    (folder / f"{name}.src").write_text("\n".join(src) + "\n", encoding="utf-8")
    (folder / f"{name}.tgt").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return Corpus(src=folder / f"{name}.src", tgt=folder / f"{name}.tgt")


def pools(folder: Path, corpora: list[tuple[str, Corpus, float, int | None]], pool_size=100, max_len=16,
          keep=True, seed=3, settings=None, encoder=encode) -> TextPools:
    indexes = [CorpusIndex(name, c, folder, dedup=bool(settings and settings.duplicates)) for name, c, _, _ in corpora]
    filters = [PairFilters(settings or Filters(), max_len) for _ in corpora]
    return TextPools(indexes, [w for _, _, w, _ in corpora], filters, [t for *_, t in corpora], encoder, encoder,
                     seed=seed, pool_size=pool_size, keep=keep)


def stream(source, **kw) -> BatchStream:
    return BatchStream(source, batch_tokens=kw.pop("batch_tokens", 64), seed=3, **kw)


def pair_ids(batch) -> list[int]:
    """The pair id of every row (the first id at or above ID0; a tag may come before it)."""
    return [int(next(x for x in row.tolist() if x >= ID0)) - ID0 for row in batch.src]


def epoch_ids(s: BatchStream, epoch: int, **kw) -> list[list[int]]:
    return [pair_ids(b) for b, _ in s.epoch(epoch, **kw)]


def test_each_epoch_is_one_pass_within_the_budget_reshuffled_and_reproducible(tmp_path: Path):
    c = write_corpus(tmp_path, "a", 0, 300)
    s = stream(pools(tmp_path, [("train", c, 1.0, None)], pool_size=70))
    assert s.n_pools == 5
    epochs = []
    for epoch in (1, 2):
        batches = [b for b, _ in s.epoch(epoch)]
        for b in batches:
            assert b.src.numel() <= 64 or b.src.size(0) == 1
            assert b.tgt_out.size() == b.tgt_in.size() and (b.tgt_in[:, 0] == BOS_ID).all()
            assert b.n_tgt_tokens == int((b.tgt_out != PAD_ID).sum())
            assert ((b.tgt_out == EOS_ID).sum(1) == 1).all()
        epochs.append([pair_ids(b) for b in batches])
    flat = [sorted(i for b in e for i in b) for e in epochs]
    assert flat[0] == flat[1] == list(range(300))  # every pair once an epoch ...
    assert epochs[0] != epochs[1]  # ... in another order
    again = stream(pools(tmp_path, [("train", c, 1.0, None)], pool_size=70), prefetch=False)
    assert epoch_ids(again, 1) == epochs[0]  # a function of (seed, epoch), background thread or not
    s.close()


def test_a_corpus_of_two_halves_mixes_both_from_the_first_batches(tmp_path: Path):
    c = write_corpus(tmp_path, "ab", 0, 400)  # pairs 0-199 are source A, 200-399 source B
    s = stream(pools(tmp_path, [("train", c, 1.0, None)], pool_size=100))
    assert s.n_pools == 4
    batches = epoch_ids(s, 1)
    first = [i for b in batches[:3] for i in b]
    assert any(i < 200 for i in first) and any(i >= 200 for i in first)
    for g in range(4):  # every pool draws from the whole corpus, not 100 lines in file order
        pool, _ = s.pools.pool(1, g)
        assert 0.3 < np.mean(pool.src_ids[pool.src_start] - ID0 < 200) < 0.7
    s.close()


def test_weights_3_to_1_hold_over_every_window_of_200_pairs(tmp_path: Path):
    a, b = write_corpus(tmp_path, "a", 0, 500), write_corpus(tmp_path, "b", 5000, 700)
    s = stream(pools(tmp_path, [("clean", a, 3.0, TAG_A), ("bt", b, 1.0, TAG_B)], pool_size=300))
    tags = [int(row[0]) for epoch in (1, 2) for batch, _ in s.epoch(epoch) for row in batch.src]
    assert set(tags) == {TAG_A, TAG_B}  # every source starts with its corpus's tag
    from_a = np.array(tags) == TAG_A
    shares = [from_a[i:i + 200].mean() for i in range(0, len(from_a) - 200, 20)]
    assert 0.65 <= min(shares) and max(shares) <= 0.85, (min(shares), max(shares))
    assert abs(from_a.mean() - 0.75) < 0.02
    s.close()


def _feed(folder: Path, corpus: Corpus, on_end, prefetch=True) -> DataFeed:
    source = pools(folder, [("train", corpus, 1.0, None)], pool_size=60)
    return DataFeed(stream(source, prefetch=prefetch), "cpu", 1, on_end)


def test_a_resumed_feed_sees_exactly_the_pairs_of_an_unbroken_one_and_reads_only_its_pool(tmp_path: Path):
    c = write_corpus(tmp_path, "a", 0, 300, blank_every=7)
    ends_a, ends_b = [], []
    unbroken = _feed(tmp_path, c, lambda e, s: ends_a.append((e, s.to_dict())))
    at = DataPosition(1, 0, 0, 0, {})
    seen, saved = [], None
    for step in range(60):  # into epoch 2 (about 38 batches an epoch)
        batches, at = unbroken.pull(1, at)
        seen.append(pair_ids(batches[0]))
        if step == 19:
            saved = at
    assert saved.epoch == 1 and saved.pool >= 2
    resumed = _feed(tmp_path, c, lambda e, s: ends_b.append((e, s.to_dict())), prefetch=False)
    at = saved
    for step in range(20, 60):
        batches, at = resumed.pull(1, at)
        assert pair_ids(batches[0]) == seen[step], step
        if step == 20:  # the first batch after the resume: only the pool it is in was read
            schedule = resumed.stream.pools.schedule
            assert resumed.stream.pools.corpora[0].pairs_read == len(schedule.pool(1, saved.pool)[0])
    assert ends_b == ends_a and ends_a[0][1]["corpora"]["train"]["dropped"]["empty"] == 300 // 7 + 1
    assert ends_a[0][1]["corpora"]["train"]["read"] == 300
    unbroken.close()
    resumed.close()


def test_ranks_read_and_train_disjoint_shares_of_each_pool(tmp_path: Path):
    c = write_corpus(tmp_path, "a", 0, 300)
    whole = pools(tmp_path, [("train", c, 1.0, None)], pool_size=100)
    shares = [pools(tmp_path, [("train", c, 1.0, None)], pool_size=100) for _ in range(2)]
    for g in range(whole.n_pools):
        everything, _ = whole.pool(1, g)
        mine = [shares[r].pool(1, g, rank=r, world=2) for r in (0, 1)]
        ids = [set((mine[r][0].src_ids[mine[r][0].src_start] - ID0).tolist()) for r in (0, 1)]
        assert not ids[0] & ids[1]
        assert ids[0] | ids[1] == set((everything.src_ids[everything.src_start] - ID0).tolist())
        assert abs(len(ids[0]) - len(ids[1])) <= 1
    assert [s.corpora[0].pairs_read for s in shares] == [150, 150]  # each rank read its half only


def test_subword_sampling_tokenizes_a_one_pool_corpus_every_epoch(tmp_path: Path):
    c = write_corpus(tmp_path, "a", 0, 50)
    calls = []

    def counting(texts):
        calls.append(len(texts))
        return encode(texts)

    kept = stream(pools(tmp_path, [("train", c, 1.0, None)], keep=True, encoder=counting), prefetch=False)
    for epoch in (1, 2, 3):
        list(kept.epoch(epoch))
    assert sum(calls) == 2 * 50  # source and target, once: kept after epoch 1
    calls.clear()
    sampled = stream(pools(tmp_path, [("train", c, 1.0, None)], keep=False, encoder=counting), prefetch=False)
    for epoch in (1, 2, 3):
        list(sampled.epoch(epoch))
    assert sum(calls) == 3 * 2 * 50


def test_bpe_dropout_changes_the_segmentation_between_epochs(tiny_recipe: Path):
    from txcli.commands.run import load_tokenizers, train_tokenizers
    from txcli.commands.train_data import training_stream

    from .conftest import tiny

    recipe = tiny(tiny_recipe, "data.sampling={dropout: 0.3}")
    train_tokenizers(recipe)
    tok, _ = load_tokenizers(recipe.run_dir, True)
    s = training_stream(recipe, tok, tok, prefetch=False)
    per_epoch = []
    for epoch in (1, 2):
        rows = {}
        for b, _ in s.epoch(epoch):
            for row in b.tgt_out.tolist():
                ids = [x for x in row if x not in (PAD_ID, EOS_ID)]
                rows.setdefault(tok.decode(ids).replace(" ", ""), set()).add(tuple(ids))
        per_epoch.append(rows)
    s.close()
    common = set(per_epoch[0]) & set(per_epoch[1])
    assert len(common) > 50
    assert any(per_epoch[0][t] != per_epoch[1][t] for t in common)  # the same text, cut another way


def test_duplicates_and_lengths_are_counted_per_corpus(tmp_path: Path):
    (tmp_path / "d.tsv").write_text("p1 a\tx\np2 b\ty\np1 a\tx\np3 " + "w " * 30 + "\tz\np4 c\t\n", encoding="utf-8")
    corpus = Corpus(path=tmp_path / "d.tsv")
    source = pools(tmp_path, [("d", corpus, 1.0, None)], max_len=8, settings=Filters(duplicates=True))
    stats = EpochStats()
    ids = sorted(i for b, _ in stream(source).epoch(1, stats=stats) for i in pair_ids(b))
    assert ids == [1, 2]
    assert stats.to_dict()["corpora"]["d"] == {"read": 5, "kept": 2, "dropped": {"empty": 1, "max_len": 1, "duplicate": 1}}
    assert stats.kept == 2 and stats.batches >= 1
    source.close()


def test_compressed_and_jsonl_corpora_read_the_same_pairs(tmp_path: Path):
    lines = [f"p{i} {'w' * (i % 5 + 1)}\tt{i}" for i in range(40)]
    (tmp_path / "c.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "c.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines))  # no newline after the last line
    (tmp_path / "c.jsonl").write_text("".join(f'{{"src": "{line.split(chr(9))[0]}", "tgt": "{line.split(chr(9))[1]}"}}\n\n'
                                              for line in lines), encoding="utf-8")
    plain = CorpusIndex("c", Corpus(path=tmp_path / "c.tsv"), tmp_path)
    packed = CorpusIndex("c", Corpus(path=tmp_path / "c.tsv.gz"), tmp_path / "work")
    jsonl = CorpusIndex("c", Corpus(path=tmp_path / "c.jsonl"), tmp_path)
    order = np.random.default_rng(0).permutation(40)
    assert len(plain) == len(packed) == len(jsonl) == 40
    assert plain.read(order) == packed.read(order) == jsonl.read(order)
    assert list((tmp_path / "work").iterdir())  # the decompressed copy, while open
    packed.close()
    assert not list((tmp_path / "work").iterdir())


def test_bad_data_names_the_file_and_line(tmp_path: Path):
    (tmp_path / "a.src").write_bytes(b"one\ntwo\xff\nthree\n")
    (tmp_path / "a.tgt").write_text("1\n2\n3\n", encoding="utf-8")
    index = CorpusIndex("a", Corpus(src=tmp_path / "a.src", tgt=tmp_path / "a.tgt"), tmp_path)
    assert index.read([2, 0]) == [("three", "3"), ("one", "1")]
    with pytest.raises(UsageError, match=r"a\.src: line 2: not valid UTF-8"):
        index.read([1])
    (tmp_path / "b.tgt").write_text("1\n2\n", encoding="utf-8")
    with pytest.raises(UsageError, match="has 3 lines but .*b.tgt has 2"):
        CorpusIndex("a", Corpus(src=tmp_path / "a.src", tgt=tmp_path / "b.tgt"), tmp_path)
    (tmp_path / "c.tsv").write_text("a\tb\nno tab here\n", encoding="utf-8")
    with pytest.raises(UsageError, match=r"c\.tsv: line 2: expected 'source<TAB>target'"):
        CorpusIndex("c", Corpus(path=tmp_path / "c.tsv"), tmp_path).read([0, 1])
    (tmp_path / "d.jsonl").write_text('{"src": "a", "tgt": "b"}\n\n{"src": 1}\n', encoding="utf-8")
    with pytest.raises(UsageError, match=r"d\.jsonl: line 3: expected"):
        CorpusIndex("d", Corpus(path=tmp_path / "d.jsonl"), tmp_path).read([1])


class FakePrepared:
    """A prepared corpus as prepared.PreparedCorpus gives it: kept pairs only, tag in place."""

    def __init__(self, name: str, first: int, n: int, tag: int):
        self.name = name
        src = [np.array([tag, ID0 + i] + [5] * (i % 4), np.int32) for i in range(first, first + n)]
        tgt = [np.array([6] * (1 + i % 3), np.int32) for i in range(n)]
        self.pairs = EncodedPairs(src, tgt)
        self.counts = FilterCounts.from_dict({"read": n + 3, "kept": n, "dropped": {"empty": 3}})

    def __len__(self):
        return len(self.pairs)

    def take(self, index):
        return self.pairs.take(index)


def test_prepared_pools_mix_the_cached_corpora_by_weight(tmp_path: Path):
    data = SimpleNamespace(corpora=[FakePrepared("clean", 0, 400, TAG_A), FakePrepared("bt", 5000, 400, TAG_B)],
                           manifest={})
    s = stream(PreparedPools(data, [3.0, 1.0], seed=1, pool_size=200))
    assert s.n_pools == 4
    stats = EpochStats()
    rows = [(int(r[0]), int(r[1]) - ID0) for b, _ in s.epoch(1, stats=stats) for r in b.src]
    tags = np.array([t for t, _ in rows])
    assert abs((tags == TAG_A).mean() - 0.75) < 0.02
    clean = [i for t, i in rows if t == TAG_A]
    assert len(clean) == 600 and len(set(clean)) == 400  # 3/4 of 800 from 400 pairs: each once, then 200 again
    assert stats.to_dict()["corpora"]["bt"] == {"read": 200, "kept": 200, "dropped": {}}
    s.close()


def test_validation_encoding_and_length_buckets():
    words = lambda texts: [[4 + len(w) for w in t.split()] for t in texts]  # noqa: E731
    kept: list[int] = []
    pairs = [("a b c", "x y"), ("", "x"), ("a " * 20, "x"), ("a b", "x y z")]
    _, stats = encode_pairs(pairs, words, words, max_len=8, kept=kept)
    assert (stats.kept, stats.too_long, stats.empty, kept) == (2, 1, 1, [0, 3])
    lengths = np.random.default_rng(0).integers(1, 40, size=2000)
    batches = length_buckets(lengths, lengths, 400, np.random.default_rng(1))
    padded = sum(len(b) * (lengths[b].max() + 1) for b in batches)
    assert sum(len(b) for b in batches) == 2000
    assert max(len(b) * (lengths[b].max() + 1) for b in batches) <= 400
    assert (lengths + 1).sum() / padded > 0.95  # bucketing keeps padding low


def test_encoded_pairs_take_and_concat():
    a = EncodedPairs([np.array([1, 2]), np.array([3]), np.array([4, 5, 6])], [np.array([7]), np.array([8, 9]), np.array([10])])
    b = EncodedPairs([np.array([11])], [np.array([12, 13])])
    both = EncodedPairs.concat([a, EncodedPairs([], []), b])
    picked = both.take(np.array([3, 0, 2]))
    assert [picked.src_ids[s:s + n].tolist() for s, n in zip(picked.src_start, picked.src_len)] == [[11], [1, 2], [4, 5, 6]]
    assert [picked.tgt_ids[s:s + n].tolist() for s, n in zip(picked.tgt_start, picked.tgt_len)] == [[12, 13], [7], [10]]
    assert len(both.take(np.zeros(0, np.int64))) == 0
