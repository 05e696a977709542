"""trainer.ranking.loss: the weighted logistic loss and the watch-time weights, against hand and NumPy values."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.ranking import loss


def numpy_weighted_loss(labels: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> float:
    """The expectation: mean over all pairs of w * binary cross-entropy, in float64."""
    logits = logits.astype(np.float64)
    probability = 1.0 / (1.0 + np.exp(-logits))
    cross_entropy = -(labels * np.log(probability) + (1 - labels) * np.log(1 - probability))
    return float((weights * cross_entropy).sum() / labels.size)


def best_constant_logit(labels: np.ndarray, weights: np.ndarray, steps: int = 400, learning_rate: float = 2.0
                        ) -> float:
    """Gradient descent on one logit shared by every pair, minimising the project's loss."""
    logit = tf.Variable(0.0)

    def step(count: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            value = loss.weighted_logistic_loss(labels, tf.fill(labels.shape, logit), weights)
        with tf.control_dependencies([logit.assign_sub(learning_rate * tape.gradient(value, logit))]):
            return count + 1

    # one graph rather than hundreds of eager steps; autograph off so it never re-reads the loss's source
    @tf.function(autograph=False)
    def descend() -> None:
        tf.while_loop(lambda count: count < steps, step, [tf.constant(0)])

    descend()
    return float(logit.numpy())


@pytest.mark.parametrize(("labels", "logits", "weights"), [
    ([[1, 0, 0], [1, 0, 0]], [[2.0, -1.0, 0.5], [-0.3, 0.0, 1.5]], [[3.0, 1.0, 1.0], [0.5, 1.0, 1.0]]),
    ([[1, 0]], [[0.0, 0.0]], [[1.0, 1.0]]),
    ([[1, 1, 0, 0]], [[4.0, -4.0, 4.0, -4.0]], [[0.0, 2.0, 1.0, 0.25]]),
])
def test_weighted_logistic_loss_matches_the_formula(labels, logits, weights):
    labels, logits, weights = (np.asarray(v, dtype=np.float32) for v in (labels, logits, weights))
    value = float(loss.weighted_logistic_loss(labels, logits, weights))
    assert value == pytest.approx(numpy_weighted_loss(labels, logits, weights), rel=1e-6)


@pytest.mark.parametrize(("label", "logit", "weight", "expected"), [
    (1.0, 2.0, 3.0, 3 * np.log1p(np.exp(-2.0))),  # 3 * -log(sigmoid(2))
    (0.0, 2.0, 1.0, np.log1p(np.exp(2.0))),  # -log(1 - sigmoid(2))
    (1.0, 0.0, 0.5, 0.5 * np.log(2.0)),
    (0.0, -1.0, 0.0, 0.0),  # weight 0 removes a pair
])
def test_weighted_logistic_loss_by_hand_for_one_pair(label, logit, weight, expected):
    value = float(loss.weighted_logistic_loss(np.array([[label]], np.float32), np.array([[logit]], np.float32),
                                              np.array([[weight]], np.float32)))
    assert value == pytest.approx(expected, rel=1e-6, abs=1e-7)


def test_weighted_logistic_loss_averages_over_every_pair_not_the_weights():
    """Two pairs of loss log 2 each with weights 3 and 0: (3 log 2 + 0) / 2, not / (3 + 0)."""
    value = float(loss.weighted_logistic_loss(np.array([[1.0, 0.0]], np.float32), np.zeros((1, 2), np.float32),
                                              np.array([[3.0, 0.0]], np.float32)))
    assert value == pytest.approx(1.5 * np.log(2.0), rel=1e-6)


def test_weighted_logistic_loss_is_stable_for_large_logits():
    labels = np.array([[1.0, 0.0]], dtype=np.float32)
    logits = np.array([[-200.0, 200.0]], dtype=np.float32)
    assert float(loss.weighted_logistic_loss(labels, logits, np.ones_like(labels))) == pytest.approx(200.0)


@pytest.mark.parametrize(("watch_times", "negatives"), [([2.0, 4.0, 6.0], 6), ([0.5], 4), ([1.0, 1.0], 20)])
def test_the_optimum_odds_are_the_expected_watch_time(watch_times, negatives):
    """Positives weighted by T and negatives by 1: minimising the loss gives exp(logit) = sum T / negatives."""
    watch_times = np.asarray(watch_times, dtype=np.float32)
    labels = np.concatenate([np.ones(len(watch_times)), np.zeros(negatives)]).astype(np.float32)[None, :]
    weights = np.concatenate([watch_times, np.ones(negatives)]).astype(np.float32)[None, :]
    best = best_constant_logit(labels, weights)
    assert np.exp(best) == pytest.approx(watch_times.sum() / negatives, rel=2e-3)
    # plain logistic regression (all weights 1) learns the positive rate's odds instead
    plain = best_constant_logit(labels, np.ones_like(weights))
    assert np.exp(plain) == pytest.approx(len(watch_times) / negatives, rel=2e-3)


def test_weights_built_by_the_module_give_odds_of_the_watch_time_in_the_source_unit():
    """watch_time_unit -> row_weights -> loss: exp(best) * unit = sum T / negatives.

    Rows of [positive, n negatives]; a missing watch time weighs one average watch (the unit).
    """
    watch_time = np.array([30.0, 90.0, np.nan, 60.0])
    num_negatives = 3
    unit = loss.watch_time_unit(watch_time)
    assert unit == pytest.approx(60.0)
    weights = loss.row_weights(watch_time, unit, num_negatives).numpy()
    labels = np.zeros_like(weights)
    labels[:, 0] = 1.0
    best = best_constant_logit(labels, weights)
    assert np.exp(best) * unit == pytest.approx((30 + 90 + 60 + 60) / (4 * num_negatives), rel=2e-3)


def test_normalised_weights_make_the_loss_independent_of_the_watch_time_unit():
    """Seconds or hours: after dividing by the unit the weights, and so the loss, are the same."""
    seconds = np.array([120.0, 30.0, np.nan, 600.0])
    logits = np.array([[0.3, -1.0], [1.2, 0.4], [-0.5, 0.0], [2.0, -2.0]], np.float32)
    labels = np.tile(np.array([[1.0, 0.0]], np.float32), (4, 1))
    values = []
    for watch_time in (seconds, seconds / 3600.0):
        weights = loss.row_weights(watch_time, loss.watch_time_unit(watch_time), 1)
        values.append(float(loss.weighted_logistic_loss(labels, logits, weights)))
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    known = np.array([120.0, 30.0, 600.0]) / 250.0  # unit = mean(120, 30, 600) = 250
    expected = np.array([[known[0], 1], [known[1], 1], [1, 1], [known[2], 1]])
    assert values[0] == pytest.approx(numpy_weighted_loss(labels, logits, expected), rel=1e-6)


@pytest.mark.parametrize(("watch_time", "expected"), [
    ([10.0, np.nan, 30.0], 20.0),
    ([np.nan, np.nan], 1.0),  # no watch time known: plain logistic regression
    ([], 1.0),
    ([0.0, 0.0, 0.0], 1.0),  # a unit must be positive
    ([np.inf, 4.0, 8.0], 6.0),  # not finite is not known
])
def test_watch_time_unit_is_the_mean_known_watch_time(watch_time, expected):
    assert loss.watch_time_unit(np.array(watch_time, dtype=np.float64)) == pytest.approx(expected)


@pytest.mark.parametrize(("watch_time", "unit", "negatives", "expected"), [
    ([10.0, np.nan, 30.0, 0.0], 20.0, 2, [[0.5, 1, 1], [1.0, 1, 1], [1.5, 1, 1], [0.0, 1, 1]]),
    ([4.0], 2.0, 0, [[2.0]]),
    ([], 1.0, 3, np.zeros((0, 4))),
])
def test_row_weights_divide_the_watch_by_the_unit_and_weigh_negatives_one(watch_time, unit, negatives, expected):
    weights = loss.row_weights(np.array(watch_time, np.float32), unit, negatives).numpy()
    np.testing.assert_array_equal(weights, np.asarray(expected, np.float32).reshape(len(watch_time), 1 + negatives))
    assert weights.dtype == np.float32


@pytest.mark.parametrize("unit", [0.0, -3.0, float("nan")])
def test_row_weights_refuse_a_unit_that_is_not_positive(unit):
    with pytest.raises(ValueError, match="unit must be > 0"):
        loss.row_weights(np.array([1.0], np.float32), unit, 1)


def test_negative_sampling_rate_by_hand():
    # 5 items; u1 watched 1 of them (pool 4), u2 watched 3 (pool 2; "zz" is no candidate), u3 nothing (pool 5);
    # rows u1, u1, u2, u3
    seen = {"u1": frozenset({"a"}), "u2": frozenset({"a", "b", "c", "zz"})}
    rate = loss.negative_sampling_rate(2, np.array(["u1", "u1", "u2", "u3"], dtype=object), seen, list("abcde"))
    assert rate == pytest.approx((2 / 4 + 2 / 4 + 2 / 2 + 2 / 5) / 4)


def test_negative_sampling_rate_of_a_user_who_watched_everything_draws_from_one_item():
    rate = loss.negative_sampling_rate(3, np.array(["u1"], dtype=object), {"u1": frozenset("ab")}, list("ab"))
    assert rate == pytest.approx(3.0)


@pytest.mark.parametrize(("num_negatives", "users"), [(0, ["u1"]), (-1, ["u1"]), (2, [])])
def test_negative_sampling_rate_needs_rows_and_negatives(num_negatives, users):
    with pytest.raises(ValueError, match="num_negatives"):
        loss.negative_sampling_rate(num_negatives, np.array(users, dtype=object), {"u1": frozenset({"a"})},
                                    list("abcde"))
