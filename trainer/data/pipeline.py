"""tf.data input pipelines over the in-memory feature dicts of `trainer.data.examples`."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.data.schema import DataError

# Boundaries for bucketing the `age` input in-graph (tf.keras.layers.Discretization). They
# serve ages in years (synthetic, ml-100k) and ml-1m's age codes alike, because those codes are
# the lower ends of its ranges (1 = under 18, 18, 25, 35, 45, 50, 56+). Bucket 0 (age < 1) is
# the "unknown" age 0.
AGE_BUCKETS: tuple[float, ...] = (1.0, 18.0, 25.0, 35.0, 45.0, 50.0, 56.0, 65.0)


def make_dataset(
    features: dict[str, np.ndarray],
    batch_size: int,
    shuffle: bool,
    seed: int,
    cache: bool = True,
    repeat: bool = False,
) -> tf.data.Dataset:
    """Batches of a feature dict (every array has the same first dimension N).

    When shuffling, the examples are cached before the shuffle, so each epoch sees a new
    order (a cache after a shuffle would replay the first epoch's order forever).

    Args:
        features: name -> [N, ...] array (object arrays of str become tf.string).
        batch_size: examples per batch (the last batch may be smaller).
        shuffle: reshuffle all N examples every epoch.
        seed: the shuffle seed.
        cache: cache the examples in memory after the first pass.
        repeat: repeat forever.

    Returns:
        A dataset of dicts name -> [batch, ...] tensors.
    """
    if batch_size <= 0:
        raise DataError(f"make_dataset: batch_size must be > 0, got {batch_size}")
    sizes = {name: len(array) for name, array in features.items()}
    if not sizes or len(set(sizes.values())) != 1:
        raise DataError(f"make_dataset: features must be non-empty arrays of one length, got sizes {sizes}")
    dataset = tf.data.Dataset.from_tensor_slices({name: _tensor(array) for name, array in features.items()})
    if shuffle:
        if cache:
            dataset = dataset.cache()
        dataset = dataset.shuffle(next(iter(sizes.values())), seed=seed, reshuffle_each_iteration=True)
        dataset = dataset.batch(batch_size)
    else:
        dataset = dataset.batch(batch_size)
        if cache:
            dataset = dataset.cache()
    if repeat:
        dataset = dataset.repeat()
    return dataset.prefetch(tf.data.AUTOTUNE)


def _tensor(array: np.ndarray) -> tf.Tensor:
    array = np.asarray(array)
    if array.dtype == object:
        return tf.constant(array, dtype=tf.string)
    return tf.constant(array)
