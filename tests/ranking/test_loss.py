"""The weighted logistic regression loss and the watch-time weights, against NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.ranking import loss


def numpy_weighted_loss(labels: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> float:
    probability = 1.0 / (1.0 + np.exp(-logits))
    cross_entropy = -(labels * np.log(probability) + (1 - labels) * np.log(1 - probability))
    return float((weights * cross_entropy).sum() / labels.size)


def test_weighted_logistic_loss_matches_the_formula_on_a_toy_batch():
    labels = np.array([[1, 0, 0], [1, 0, 0]], dtype=np.float32)
    logits = np.array([[2.0, -1.0, 0.5], [-0.3, 0.0, 1.5]], dtype=np.float32)
    weights = np.array([[3.0, 1.0, 1.0], [0.5, 1.0, 1.0]], dtype=np.float32)
    value = float(loss.weighted_logistic_loss(labels, logits, weights))
    assert value == pytest.approx(numpy_weighted_loss(labels, logits, weights), rel=1e-6)
    # by hand for the first pair: 3 * -log(sigmoid(2)) = 3 * log(1 + e^-2)
    single = float(loss.weighted_logistic_loss(labels[:1, :1], logits[:1, :1], weights[:1, :1]))
    assert single == pytest.approx(3 * np.log1p(np.exp(-2.0)), rel=1e-6)


def test_weighted_logistic_loss_is_stable_for_large_logits():
    labels = np.array([[1.0, 0.0]], dtype=np.float32)
    logits = np.array([[-200.0, 200.0]], dtype=np.float32)
    assert float(loss.weighted_logistic_loss(labels, logits, np.ones_like(labels))) == pytest.approx(200.0)


def test_the_optimum_odds_are_the_expected_watch_time():
    """With positives weighted by T and negatives by 1, the best constant logit is log(sum T / negatives)."""
    watch_times = np.array([2.0, 4.0, 6.0], dtype=np.float32)
    labels = np.concatenate([np.ones(3), np.zeros(6)]).astype(np.float32)[None, :]
    weights = np.concatenate([watch_times, np.ones(6)]).astype(np.float32)[None, :]
    grid = np.linspace(-3, 3, 6001)
    values = [numpy_weighted_loss(labels, np.full_like(labels, z), weights) for z in grid]
    best = grid[int(np.argmin(values))]
    assert np.exp(best) == pytest.approx(watch_times.sum() / 6, abs=2e-3)


def test_watch_time_unit_is_the_mean_known_watch_time():
    assert loss.watch_time_unit(np.array([10.0, np.nan, 30.0])) == pytest.approx(20.0)
    assert loss.watch_time_unit(np.array([np.nan, np.nan])) == 1.0
    assert loss.watch_time_unit(np.zeros(3)) == 1.0


def test_positive_weights_divide_by_the_unit_and_missing_weigh_one():
    weights = loss.positive_weights(np.array([10.0, np.nan, 30.0, 0.0]), 20.0)
    np.testing.assert_allclose(weights, [0.5, 1.0, 1.5, 0.0])
    assert weights.dtype == np.float32


@pytest.mark.parametrize(("watch_time", "unit", "message"), [
    (np.array([1.0, -2.0]), 1.0, "watch_time must be >= 0"),
    (np.array([1.0]), 0.0, "unit must be > 0"),
])
def test_positive_weights_reject_bad_values(watch_time, unit, message):
    with pytest.raises(ValueError, match=message):
        loss.positive_weights(watch_time, unit)


def test_candidate_weights_put_the_positive_first():
    np.testing.assert_array_equal(loss.candidate_weights(np.array([2.0, 0.5], np.float32), 3),
                                  [[2.0, 1.0, 1.0], [0.5, 1.0, 1.0]])


def test_negative_sampling_rate_by_hand():
    # 5 items; u1 watched 1 of them (pool 4), u2 watched 3 (pool 2), u3 nothing (pool 5); rows u1, u1, u2, u3
    seen = {"u1": frozenset({"a"}), "u2": frozenset({"a", "b", "c", "zz"})}
    rate = loss.negative_sampling_rate(2, np.array(["u1", "u1", "u2", "u3"], dtype=object), seen, list("abcde"))
    assert rate == pytest.approx((2 / 4 + 2 / 4 + 2 / 2 + 2 / 5) / 4)
    with pytest.raises(ValueError, match="num_negatives"):
        loss.negative_sampling_rate(0, np.array(["u1"], dtype=object), seen, list("abcde"))
