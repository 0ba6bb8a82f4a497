"""The weighted schedule: quotas, passes over each corpus, pools, interleaving, shares."""

from __future__ import annotations

import numpy as np

from txcli.mixture import Schedule, corpus_shares, epoch_quotas, interleave, pools_per_epoch


def test_quotas_split_the_epoch_by_weight():
    assert epoch_quotas([1000], [5.0]).tolist() == [1000]
    assert epoch_quotas([600, 200], [3, 1]).tolist() == [600, 200]
    assert epoch_quotas([100, 900], [3, 1]).tolist() == [750, 250]  # a small corpus weighted up repeats
    q = epoch_quotas([10, 10, 10], [1, 1, 1])
    assert q.sum() == 30 and q.max() - q.min() <= 1
    assert epoch_quotas([1000, 5], [1, 1e-6]).tolist()[1] == 1  # at least one pair
    assert epoch_quotas([0, 10], [1, 1]).tolist() == [0, 10]
    assert pools_per_epoch([120, 30], 50) == 3 and pools_per_epoch([0], 50) == 1


def test_one_corpus_epoch_is_one_pass_and_every_pool_is_a_pure_function():
    s = Schedule(7, ["train"], [1003], [1.0], 100)
    assert s.n_pools == 11
    for epoch in (1, 2):
        pools = [s.pool(epoch, g)[0] for g in range(s.n_pools)]
        assert sorted(np.concatenate(pools).tolist()) == list(range(1003))
        assert max(map(len, pools)) <= 100
    fresh = Schedule(7, ["train"], [1003], [1.0], 100)
    assert fresh.pool(2, 5)[0].tolist() == s.pool(2, 5)[0].tolist()  # no other pool needed
    assert s.pool(1, 0)[0].tolist() != s.pool(2, 0)[0].tolist()
    assert Schedule(8, ["train"], [1003], [1.0], 100).pool(1, 0)[0].tolist() != s.pool(1, 0)[0].tolist()


def test_a_repeated_corpus_meets_every_pair_before_any_twice():
    s = Schedule(1, ["small", "big"], [30, 570], [1, 1], 100)  # small gives 300 an epoch: 10 passes
    small = np.concatenate([s.pool(1, g)[0] for g in range(s.n_pools)])
    assert len(small) == 300
    for k in range(10):
        assert sorted(small[30 * k:30 * (k + 1)].tolist()) == list(range(30))
    assert all(abs(len(s.pool(1, g)[0]) - 50) <= 1 for g in range(s.n_pools))  # the mix holds in every pool


def test_interleave_spreads_each_corpus_over_the_pool():
    order = interleave([300, 100])
    assert len(order) == 400 and (order == 0).sum() == 300
    for start in range(0, 400, 20):
        assert 13 <= (order[start:start + 20] == 0).sum() <= 17
    assert interleave([0, 5]).tolist() == [1] * 5
    assert len(interleave([])) == 0


def test_corpus_shares_follow_weights_and_kept_rates():
    assert np.allclose(corpus_shares([1000, 1000], [3, 1]), [0.75, 0.25])
    # half of the first corpus filtered out: it really gives 3 * 0.5 against 1
    assert np.allclose(corpus_shares([1000, 1000], [3, 1], kept=[500, 1000]), [0.6, 0.4])
