"""Negatives drawn from the candidate generator's list (ranking.candidate_negatives)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trainer.config import ConfigError, load_config
from trainer.ranking.negatives import CandidatePools, NegativeSampler


def test_negative_sampler_draws_its_candidate_columns_from_the_users_pool():
    seen = {"u1": frozenset({"a"}), "u2": frozenset({"b"})}
    pools = CandidatePools(users=np.array(["u2", "u1"], dtype=object),
                           items=np.array([["c", "d"], ["e", ""]], dtype=object))
    sampler = NegativeSampler(["u1", "u2", "u3"], seen, ["a", "b", "c", "d", "e", "f"], pools)
    draws = sampler.sample(300, np.random.default_rng(0), from_candidates=200)
    candidates, uniform = draws[:, :200], draws[:, 200:]
    assert set(candidates[1]) == {"c", "d"}  # u2's pool, both entries
    assert set(candidates[0]) == {"b", "c", "d", "e", "f"}  # u1's pool is "e" and a pad: pads draw uniformly
    assert (candidates[0] == "e").mean() > 0.45
    assert set(candidates[2]) == set(uniform[2]) == {"a", "b", "c", "d", "e", "f"}  # u3 has no pool
    assert set(uniform[0]) == {"b", "c", "d", "e", "f"} and set(uniform[1]) == {"a", "c", "d", "e", "f"}


@pytest.mark.parametrize(("pools", "from_candidates", "message"), [
    (None, 1, "needs the NegativeSampler to be built with candidate pools"),
    (CandidatePools(np.array(["u1"], dtype=object), np.array([["b"]], dtype=object)), 3,
     r"from_candidates must be in \[0, num=2\], got 3"),
])
def test_negative_sampler_refuses_candidate_draws_it_cannot_make(pools, from_candidates, message):
    sampler = NegativeSampler(["u1"], {}, ["a", "b"], pools)
    with pytest.raises(ValueError, match=message):
        sampler.sample(2, np.random.default_rng(0), from_candidates)


def test_candidate_pools_are_the_generators_top_unseen_items(retrieval_result, data, config):
    from trainer.data.examples import query_examples
    from trainer.ranking.retrieval_feature import candidate_pools
    from trainer.retrieval.model import embed_queries

    events = data.split.train
    pools = candidate_pools(retrieval_result, events, data.dataset.users, data.t_max, data.history_length,
                            data.search_history_length, k=5, batch=7)
    users = np.array(sorted(events["user_id"].astype(str).unique()), dtype=object)
    np.testing.assert_array_equal(pools.users, users)
    queries = embed_queries(retrieval_result.model.query_tower, query_examples(
        events, data.dataset.users, users, data.t_max, data.history_length, data.search_history_length))
    scores = queries @ retrieval_result.item_embeddings.T
    item_ids = np.asarray(retrieval_result.item_ids).astype(str)
    for row, user in enumerate(users):
        watched = set(events.loc[events["user_id"].astype(str) == user, "item_id"].astype(str))
        order = [item_ids[i] for i in np.argsort(-scores[row], kind="stable") if item_ids[i] not in watched]
        assert list(pools.items[row]) == order[:5], user


def test_the_sampling_rate_of_a_candidate_item_adds_c_over_k():
    from trainer.ranking.loss import negative_sampling_rate

    seen = {"u1": frozenset("ab"), "u2": frozenset("a")}
    users = np.array(["u1", "u1", "u2"], dtype=object)
    # u1 has 3 unwatched items, u2 4; 2 of 4 negatives uniform, 2 from a list of 10
    expected = (2 * (2 / 3) + 2 / 4) / 3 + 2 / 10
    assert negative_sampling_rate(4, users, seen, list("abcde"), 2, 10) == pytest.approx(expected)
    assert negative_sampling_rate(4, users, seen, list("abcde")) == pytest.approx((2 * (4 / 3) + 4 / 4) / 3)
    with pytest.raises(ValueError, match=r"candidate_negatives must be in \[0, 4\]"):
        negative_sampling_rate(4, users, seen, list("abcde"), 5, 10)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"ranking.num_negatives": 2, "ranking.candidate_negatives": 3},
     r"ranking.candidate_negatives must be in \[0, ranking.num_negatives = 2\], got 3"),
    ({"ranking.candidate_negatives": 1, "data.prepared_dir": "/nonexistent"},
     r"ranking.candidate_negatives \(1\) needs the in-memory training rows.*data.prepared_dir"),
    ({"ranking.retrieval_score_folds": 2, "data.prepared_dir": "/nonexistent"},
     r"ranking.retrieval_score_folds \(2\) needs the in-memory training rows.*data.prepared_dir"),
    ({"ranking.retrieval_score_folds": 1}, r"ranking.retrieval_score_folds must be 0 \(in-sample scores\) or >= 2"),
])
def test_configs_the_sampler_cannot_serve_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_epoch_examples_take_their_first_negatives_from_the_users_candidates(temporal, retrieval_result, data):
    from trainer.ranking.retrieval_feature import candidate_pools
    from trainer.ranking.train import EpochExamples, FitOptions

    pools = candidate_pools(retrieval_result, data.split.train, data.dataset.users, data.t_max, data.history_length,
                            data.search_history_length, k=3)
    options = FitOptions(epochs=1, batch_size=256, num_negatives=4, optimizer="adam", learning_rate=0.01, patience=0,
                         seed=0, candidate_negatives=2)
    inputs, labels, _ = EpochExamples(dataclasses.replace(temporal, candidate_pools=pools),
                                      ("user_id", "candidate_ids"), options)(0)
    pool_of = dict(zip(pools.users, (set(row) for row in pools.items), strict=True))
    candidates = inputs["candidate_ids"]
    np.testing.assert_array_equal(candidates[:, 0], temporal.train["item_id"])
    users = inputs["user_id"]
    from_pool = [set(row[1:3]) <= pool_of[user] for user, row in zip(users, candidates, strict=True)]
    assert all(from_pool)
    uniform = [len(set(row[3:]) & pool_of[user]) for user, row in zip(users, candidates, strict=True)]
    assert np.mean(uniform) < 0.2  # 2 uniform draws from hundreds of items rarely hit a 3-item list
    np.testing.assert_array_equal(labels[:, 1:], 0.0)
