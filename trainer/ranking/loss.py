"""Weighted logistic regression (Covington et al. 2016, section 4.2).

Positives are weighted by their watch time and negatives by 1. The odds the model then
learns are sum(watch time of positives) / number of negatives, so exp(logit) estimates the
expected watch time of an impression (closely, when the positive rate is small).

Weight normalisation: watch times are divided by `unit` = the mean known watch time of the
training positives, so the mean positive weight is 1 and the loss keeps the scale of plain
logistic regression whatever the unit of the source (seconds for synthetic logs; for
MovieLens the data layer's proxy rating / 5). exp(logit) then estimates expected watch time
in multiples of `unit`; the export multiplies by `unit` to report it in the source's own
unit. A positive whose watch time is missing weighs 1 (one average watch); a source with no
watch times at all gives unit 1 and plain logistic regression.

Calibration for the sampling rate. Training has no impressions: each watch comes with
`num_negatives` = n items drawn uniformly from the P_u items the user has not watched. For a
context x and an item i the optimum of the weighted loss then has
    exp(logit) = P(next watch is i | x) * E[watch time | x, i] / unit / (n / P_u),
so exp(logit) * unit * rate, with rate = the mean of n / P_u over the training rows
(`negative_sampling_rate`), estimates P(next watch is i | x) * E[watch time | x, i]: the watch
time, in the source's unit, that the user's next watch spends on i. Summed over every item the
user has not watched it is the mean watch time of a watch. This is what the export's
`expected_watch_time` reports.

With c of the n negatives drawn from the user's K candidate-generator items
(`ranking.candidate_negatives`), an item of that list is drawn at rate (n - c) / P_u + c / K and
any other at (n - c) / P_u. The export calibrates with the first: the ranking signature's job is
to re-rank the candidate generator's list, so that is the rate of the items it is asked about.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras


def watch_time_unit(watch_time: np.ndarray) -> float:
    """The normaliser: the mean of the known (finite) training watch times, 1.0 if none or not positive.

    Args:
        watch_time: [P] float, NaN = missing.
    """
    known = np.asarray(watch_time, dtype=np.float64)
    known = known[np.isfinite(known)]
    mean = float(known.mean()) if len(known) else 1.0
    return mean if mean > 0 else 1.0


def negative_sampling_rate(num_negatives: int, users: np.ndarray, seen: Mapping[str, frozenset[str]],
                           item_ids: Sequence[str], candidate_negatives: int = 0, candidates_per_user: int = 1
                           ) -> float:
    """The mean over training rows of (n - c) / P_u + c / K: how often a row draws a given unwatched item
    (with c > 0: a given item of the user's candidate list) as a negative.

    Args:
        num_negatives: n, negatives per training row.
        users: [R] the user of each training row.
        seen: user -> items of their training events (never drawn as their negatives).
        item_ids: the items uniform negatives are drawn from.
        candidate_negatives: c, of the n drawn from the user's candidate list.
        candidates_per_user: K, the length of that list.

    Raises:
        ValueError: no training rows, n not positive, c outside [0, n] or K not positive.
    """
    if num_negatives <= 0 or not len(users):
        raise ValueError(f"negative_sampling_rate: needs training rows and num_negatives > 0, got {len(users)} "
                         f"rows and {num_negatives}")
    if not 0 <= candidate_negatives <= num_negatives or candidates_per_user <= 0:
        raise ValueError(f"negative_sampling_rate: candidate_negatives must be in [0, {num_negatives}] and "
                         f"candidates_per_user > 0, got {candidate_negatives} and {candidates_per_user}")
    pool = frozenset(item_ids)
    sizes = {user: max(len(pool) - len(items & pool), 1) for user, items in seen.items()}
    counts = pd.Series(np.asarray(users, dtype=object)).astype(str).value_counts()
    uniform = num_negatives - candidate_negatives
    rates = np.array([uniform / sizes.get(user, max(len(pool), 1)) for user in counts.index])
    return float(np.average(rates, weights=counts.to_numpy())) + candidate_negatives / candidates_per_user


def row_weights(watch_time: tf.Tensor, unit: float, num_negatives: int) -> tf.Tensor:
    """Weights [B, 1 + N] float32 of rows [watch, N negatives]: watch_time / unit for the watch (1 where the watch
    time is missing), 1 for each negative. Watch times are checked to be >= 0 when the events are read.

    Args:
        watch_time: [B] float32 the watch's watch time, NaN when unknown.
        unit: the watch time of weight 1 (`watch_time_unit`).
        num_negatives: N.

    Raises:
        ValueError: a unit that is not positive.
    """
    if not unit > 0:
        raise ValueError(f"the watch-time unit must be > 0, got {unit}")
    watch_time = tf.convert_to_tensor(watch_time, tf.float32)
    watched = tf.where(tf.math.is_finite(watch_time), watch_time / unit, 1.0)
    return tf.concat([watched[:, None], tf.ones([tf.shape(watch_time)[0], num_negatives])], axis=1)


def weighted_logistic_task() -> tfrs.tasks.Ranking:
    """The ranking task of the weighted logistic regression: binary cross-entropy on logits, summed over the
    pairs it is given with their weights as sample_weight (`weighted_logistic_loss` takes the mean)."""
    return tfrs.tasks.Ranking(
        loss=keras.losses.BinaryCrossentropy(from_logits=True, reduction=keras.losses.Reduction.SUM))


def weighted_logistic_loss(labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor,
                           task: tfrs.tasks.Ranking | None = None) -> tf.Tensor:
    """Mean over all (row, candidate) pairs of weight * binary cross-entropy: the ranking models' training loss.

    Args:
        labels: [B, C] 1 for a watch, 0 for a negative.
        logits: [B, C].
        weights: [B, C].
        task: the `weighted_logistic_task` to compute it with (a model's own; None: a new one).

    Returns:
        A scalar: sum(w * (-y log sigmoid(z) - (1 - y) log(1 - sigmoid(z)))) / (B * C).
    """
    task = task or weighted_logistic_task()
    total = task(labels=tf.reshape(tf.cast(labels, tf.float32), [-1, 1]), predictions=tf.reshape(logits, [-1, 1]),
                 sample_weight=tf.reshape(tf.cast(weights, tf.float32), [-1]), compute_metrics=False)
    return total / tf.cast(tf.size(labels), total.dtype)
