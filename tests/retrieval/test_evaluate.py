"""Evaluation protocols on hand-made events, checked against values computed by hand or with NumPy."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from bench.tutorial import random_split
from trainer import metrics
from trainer.retrieval.evaluate import (
    EvalSet,
    build_eval_set,
    evaluate_scores,
    factorized_top_k_accuracy,
    popularity_scorer,
    ranking_metrics,
    top_k_excluding_seen,
)

ITEMS = np.array(["a", "b", "c", "d", "e"], dtype=object)
USERS = pd.DataFrame({"user_id": ["u1", "u2", "u3"], "gender": ["F", "M", ""], "age": [30, 0, 0],
                      "occupation": ["", "", ""], "region": ["", "", ""]})


def events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "timestamp": [r[2] for r in rows], "rating": np.nan, "watch_time": np.nan, "query": None})


HISTORY = events([("u1", "a", 1), ("u1", "b", 2), ("u2", "a", 3), ("u3", "c", 4)])
TARGETS = events([("u1", "b", 10), ("u1", "c", 11), ("u2", "d", 12), ("u2", "e", 13), ("u3", "c", 14)])


@pytest.fixture(scope="module")
def eval_set():
    return build_eval_set(HISTORY, TARGETS, USERS, ITEMS, request_time=9, history_length=3,
                          search_history_length=2, max_users=10, seed=0)


def test_relevant_items_are_the_unseen_targets_and_users_without_any_are_left_out(eval_set):
    # u1 re-watches b (seen): only c is relevant; u3 only re-watches c: no request.
    assert eval_set.queries["user_id"].tolist() == ["u1", "u2"]
    assert [rows.tolist() for rows in eval_set.relevant] == [[2], [3, 4]]
    assert eval_set.queries["watch_history"].tolist() == [["", "a", "b"], ["", "", "a"]]
    assert sorted(zip(eval_set.seen_users.tolist(), eval_set.seen_items.tolist())) == [(0, 0), (0, 1), (1, 0)]


@pytest.mark.parametrize("batch_size", [1, 2])
def test_seen_items_are_never_ranked(eval_set, batch_size):
    by_user = {"u1": [9.0, 8.0, 1.0, 7.0, 0.0], "u2": [9.0, 2.0, 3.0, 4.0, 5.0]}
    top = top_k_excluding_seen(lambda batch: np.array([by_user[u] for u in batch["user_id"]]), eval_set, k=3,
                               batch_size=batch_size)
    assert top.tolist() == [[3, 2, 4], [4, 3, 2]]


def test_metrics_match_a_hand_computation(eval_set):
    by_user = {"u1": [9.0, 8.0, 1.0, 7.0, 0.0], "u2": [9.0, 2.0, 3.0, 4.0, 5.0]}
    result = evaluate_scores(lambda batch: np.array([by_user[u] for u in batch["user_id"]]), eval_set, ks=[1, 2])
    # u1 ranks d, c: c at position 2; u2 ranks e, d: both relevant.
    assert result["recall@1"] == pytest.approx((0.0 + 0.5) / 2)
    assert result["recall@2"] == pytest.approx((1.0 + 1.0) / 2)
    ndcg_u1 = (1 / np.log2(3)) / 1.0
    assert result["ndcg@2"] == pytest.approx((ndcg_u1 + 1.0) / 2)


def test_popularity_counts_training_events(eval_set):
    scorer = popularity_scorer(HISTORY, ITEMS)
    np.testing.assert_array_equal(scorer({"user_id": np.array(["x"])})[0], [2, 1, 1, 0, 0])


def test_max_users_takes_a_seeded_sample():
    many = events([(f"u{i}", "a", 1) for i in range(50)])
    targets = events([(f"u{i}", "b", 5) for i in range(50)])
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(50)]})
    users[["gender", "occupation", "region"]] = ""
    users["age"] = 0
    first, again = (build_eval_set(many, targets, users, ITEMS, 5, 2, 2, max_users=7, seed=3) for _ in range(2))
    assert len(first) == 7 and first.queries["user_id"].tolist() == again.queries["user_id"].tolist()


def test_unknown_event_items_are_an_error():
    with pytest.raises(ValueError, match="not in the item catalogue"):
        build_eval_set(HISTORY, events([("u1", "zz", 10)]), USERS, ITEMS, 9, 3, 2, 10, 0)


def test_ranking_metrics_of_a_perfect_ranking_are_one():
    relevant = [np.array([4, 2]), np.array([1])]
    top = np.array([[2, 4, 0], [1, 3, 0]])
    assert ranking_metrics(top, relevant, [2, 3]) == {"recall@2": 1.0, "ndcg@2": 1.0, "recall@3": 1.0, "ndcg@3": 1.0}


def test_factorized_top_k_accuracy_matches_numpy_ranks():
    rng = np.random.default_rng(0)
    items = rng.normal(size=(40, 6)).astype(np.float32)
    queries = rng.normal(size=(300, 6)).astype(np.float32)
    truth = rng.integers(0, 40, 300)
    scores = queries @ items.T
    ranks = (scores > scores[np.arange(300), truth][:, None]).sum(axis=1)
    ids = np.array([f"item{i}" for i in range(40)], dtype=object)
    result = factorized_top_k_accuracy(queries, ids[truth], ids, items, ks=(1, 5, 20))
    for k in (1, 5, 20):
        assert result[f"top_{k}_accuracy"] == pytest.approx(np.mean(ranks < k), abs=1e-6)


def test_random_split_is_a_seeded_partition():
    table = events([(f"u{i % 7}", f"i{i}", i) for i in range(100)])
    train, test = random_split(table, 0.2, seed=42)
    assert (len(train), len(test)) == (80, 20)
    assert set(train["item_id"]) | set(test["item_id"]) == set(table["item_id"])
    assert not set(train["item_id"]) & set(test["item_id"])
    assert random_split(table, 0.2, seed=42)[1]["item_id"].tolist() == test["item_id"].tolist()
    assert random_split(table, 0.2, seed=1)[1]["item_id"].tolist() != test["item_id"].tolist()


def test_a_period_without_test_users_reports_no_figures_rather_than_zeros(caplog):
    nobody = build_eval_set(HISTORY, events([("u1", "a", 10)]), USERS, ITEMS, request_time=9, history_length=3,
                            search_history_length=2, max_users=10, seed=0)  # u1 only re-watches
    assert len(nobody) == 0
    with caplog.at_level("WARNING", logger="trainer"):
        assert evaluate_scores(popularity_scorer(HISTORY, ITEMS), nobody, [1, 2]) == {}
    assert "no test users" in caplog.text


def _random_eval_set(users: int, items: int, seed: int = 0) -> tuple[EvalSet, np.ndarray]:
    rng = np.random.default_rng(seed)
    seen = rng.random((users, items)) < 0.3
    seen_users, seen_items = np.nonzero(seen)
    queries = {"user_id": np.array([f"u{i}" for i in range(users)], dtype=object)}
    return EvalSet(queries, [np.array([0])] * users, seen_users.astype(np.int64), seen_items.astype(np.int64),
                   num_items=items), seen


def test_default_blocks_keep_the_scores_within_the_block_budget_and_rank_like_numpy(monkeypatch):
    scores = np.random.default_rng(1).normal(size=(9, 6)).astype(np.float32)
    eval_set, seen = _random_eval_set(*scores.shape)
    monkeypatch.setattr(metrics, "SCORE_BLOCK_FLOATS", 13)  # 2 users x 6 items fit, 3 do not
    sizes = []

    def score(batch):
        rows = [int(u[1:]) for u in batch["user_id"]]
        sizes.append(len(rows))
        return scores[rows]

    top = top_k_excluding_seen(score, eval_set, k=3)
    expected = np.argsort(-np.where(seen, -np.inf, scores), axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(top, expected)
    assert sizes == [2, 2, 2, 2, 1]


@pytest.mark.parametrize("shape", [(2, 5), (3, 4), (3,), (3, 5, 1)])
def test_a_scorer_returning_the_wrong_shape_is_named(shape):
    eval_set, _ = _random_eval_set(3, 5)
    got = re.escape(str(list(shape)))
    with pytest.raises(ValueError, match=rf"scores \[3, 5\] .* for a batch of 3 users, got shape {got}"):
        top_k_excluding_seen(lambda batch: np.zeros(shape), eval_set, k=2)
