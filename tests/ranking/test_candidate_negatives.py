"""Negatives drawn from the candidate generator's list (ranking.candidate_negatives)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from trainer.config import ConfigError, load_config


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
    ({"ranking.retrieval_score_folds": 2, "data.prepared_dir": "/nonexistent"},
     r"ranking.retrieval_score_folds \(2\) needs the in-memory training rows.*data.prepared_dir"),
    ({"ranking.retrieval_score_folds": 1}, r"ranking.retrieval_score_folds must be 0 \(in-sample scores\) or >= 2"),
])
def test_configs_the_sampler_cannot_serve_are_refused(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_training_rows_take_their_first_negatives_from_the_users_candidates(temporal, retrieval_result, data):
    from trainer.ranking.models import LABELS
    from trainer.ranking.retrieval_feature import candidate_pools
    from trainer.ranking.train import FitOptions, row_recipe

    pools = candidate_pools(retrieval_result, data.split.train, data.dataset.users, data.t_max, data.history_length,
                            data.search_history_length, k=3)
    options = FitOptions(epochs=1, batch_size=256, num_negatives=4, optimizer="adam", learning_rate=0.01, patience=0,
                         seed=0, candidate_negatives=2)
    inputs = row_recipe(dataclasses.replace(temporal, candidate_pools=pools), ("user_id", "candidate_ids"),
                        options).rows(temporal.train, 0)
    labels = inputs[LABELS]
    pool_of = dict(zip(pools.users, (set(row) for row in pools.items), strict=True))
    candidates = inputs["candidate_ids"]
    np.testing.assert_array_equal(candidates[:, 0], temporal.train["item_id"])
    users = inputs["user_id"]
    from_pool = [set(row[1:3]) <= pool_of[user] for user, row in zip(users, candidates, strict=True)]
    assert all(from_pool)
    uniform = [len(set(row[3:]) & pool_of[user]) for user, row in zip(users, candidates, strict=True)]
    assert np.mean(uniform) < 0.2  # 2 uniform draws from hundreds of items rarely hit a 3-item list
    np.testing.assert_array_equal(labels[:, 1:], 0.0)
