"""trainer.metrics against values computed by hand on small rankings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer import metrics


def test_rank_of_target_counts_ties_against_the_target():
    ranks = metrics.rank_of_target(np.array([0.5, 2.0, 0.0]), np.array([[0.9, 0.1, 0.5], [1.0, 0.0, -1.0],
                                                                          [0.0, 0.0, 0.0]]))
    assert ranks.tolist() == [2, 0, 3]


def test_rank_of_target_rejects_misaligned_shapes():
    with pytest.raises(ValueError, match="negative_scores must be"):
        metrics.rank_of_target(np.zeros(2), np.zeros((3, 4)))


@pytest.mark.parametrize(("k", "expected"), [(1, 1 / 4), (2, 2 / 4), (4, 3 / 4), (10, 3 / 4), (11, 1.0)])
def test_hit_rate(k, expected):
    assert metrics.hit_rate_at_k(np.array([0, 3, 10, 1]), k) == pytest.approx(expected)


def test_ndcg_single_relevant_item():
    # gains 1/log2(rank + 2): rank 0 -> 1, rank 3 -> 1/log2(5), rank 10 -> outside the top 10, rank 1 -> 1/log2(3)
    expected = (1.0 + 1 / math.log2(5) + 0.0 + 1 / math.log2(3)) / 4
    value = metrics.ndcg_at_k_single(np.array([0, 3, 10, 1]), 10)
    assert value == pytest.approx(expected)
    assert value == pytest.approx(0.515402, abs=1e-6)


@pytest.mark.parametrize(("k", "expected"), [(1, (1 / 2 + 0) / 2), (2, (1 / 2 + 0) / 2), (3, (1 / 2 + 1) / 2)])
def test_recall_skips_users_without_relevant_items(k, expected):
    top = [["a", "b", "c"], ["p", "q", "r"], ["x", "y", "z"]]
    relevant = [{"a", "d"}, set(), {"z"}]
    assert metrics.recall_at_k(top, relevant, k) == pytest.approx(expected)


@pytest.mark.parametrize(("k", "expected"), [(1, (30 / 40 + 0) / 2), (2, (30 / 40 + 0) / 2),
                                             (3, (40 / 40 + 5 / 5) / 2)])
def test_watch_time_recall_weighs_items_by_watch_time_and_skips_users_without_any(k, expected):
    top = [["a", "b", "d"], ["p", "q", "r"], ["x", "y", "z"]]
    watch_time = [{"a": 30.0, "d": 10.0}, {}, {"z": 5.0}]
    assert metrics.weighted_recall_at_k(top, watch_time, k) == pytest.approx(expected)


def test_ndcg_full_ranking():
    # user 1: hits at positions 1 and 3 -> DCG 1 + 1/log2(4); ideal with 2 relevant: 1 + 1/log2(3)
    # user 2: hit at position 2 -> 1/log2(3); ideal 1
    user1 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    user2 = 1 / math.log2(3)
    value = metrics.ndcg_at_k([["a", "b", "c"], ["x", "y", "w"]], [{"c", "a"}, {"y"}], 3)
    assert value == pytest.approx((user1 + user2) / 2)
    assert value == pytest.approx(0.775325, abs=1e-6)


def test_auc_counts_ties_one_half():
    positive = np.array([0.5, 1.0])
    negative = np.array([[0.1, 0.5, 0.9, 0.2], [0.0, 0.0, 0.0, 0.0]])
    assert metrics.auc(positive, negative) == pytest.approx((2.5 / 4 + 1.0) / 2)


def test_weighted_per_user_loss_hand_computed():
    positive = np.array([0.5, 1.0])
    negative = np.array([[0.1, 0.5, 0.9, 0.2], [2.0, 0.0, 0.0, 0.0]])
    watch_time = np.array([3.0, 1.0])
    # positive 1: 0.9 beats it, 0.5 ties -> 1.5 / 4 of its 3 s mispredicted; positive 2: 1 of 4 -> 1/4 of 1 s
    expected = (3.0 * 1.5 / 4 + 1.0 * 1 / 4) / (3.0 + 1.0)
    value = metrics.weighted_per_user_loss(positive, negative, watch_time)
    assert value == pytest.approx(expected)
    assert value == pytest.approx(0.34375)


def test_weighted_per_user_loss_matches_pairwise_formula_on_random_data():
    rng = np.random.default_rng(0)
    positive, negative = rng.normal(size=50), rng.normal(size=(50, 7))
    watch_time = rng.uniform(0.1, 10.0, 50)
    mispredicted = sum(watch_time[p] for p in range(50) for n in range(7) if negative[p, n] > positive[p])
    total = sum(watch_time[p] for p in range(50) for _ in range(7))
    assert metrics.weighted_per_user_loss(positive, negative, watch_time) == pytest.approx(mispredicted / total)


def test_weighted_per_user_loss_weighs_heavy_watches_more():
    negative = np.array([[1.0], [1.0]])
    long_watch_wrong = metrics.weighted_per_user_loss(np.array([0.0, 2.0]), negative, np.array([9.0, 1.0]))
    short_watch_wrong = metrics.weighted_per_user_loss(np.array([2.0, 0.0]), negative, np.array([9.0, 1.0]))
    assert long_watch_wrong == pytest.approx(0.9) and short_watch_wrong == pytest.approx(0.1)


def test_weighted_per_user_loss_of_constant_scores_is_one_half_and_unknown_times_take_the_mean():
    assert metrics.weighted_per_user_loss(np.zeros(3), np.zeros((3, 5)), np.array([1.0, np.nan, 4.0])) == 0.5
    # the unknown watch time counts as the mean known one (2.5)
    value = metrics.weighted_per_user_loss(np.array([0.0, 0.0, 2.0]), np.ones((3, 1)), np.array([1.0, np.nan, 4.0]))
    assert value == pytest.approx((1.0 + 2.5) / (1.0 + 2.5 + 4.0))


@pytest.mark.parametrize(("positive", "negative", "watch_time", "message"), [
    (np.zeros(2), np.zeros((3, 1)), np.ones(2), "expected positive_scores"),
    (np.zeros(2), np.zeros((2, 1)), np.ones(3), "expected positive_scores"),
    (np.zeros(2), np.zeros((2, 1)), np.array([1.0, -1.0]), ">= 0"),
    (np.zeros(2), np.zeros((2, 1)), np.zeros(2), "sums to 0"),
])
def test_weighted_per_user_loss_rejects_bad_input(positive, negative, watch_time, message):
    with pytest.raises(ValueError, match=message):
        metrics.weighted_per_user_loss(positive, negative, watch_time)
