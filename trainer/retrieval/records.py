"""The retrieval model's training input read from preprocessed TFRecord shards (`trainer.preprocess`).

The same features as `trainer.retrieval.train.training_features_of` on the in-memory examples,
computed in the input pipeline instead: example_age from request_time and the manifest's
t_max / t_span, candidate_probability (logQ) from the manifest's training item counts. Memory is
the shuffle buffer and one table of item frequencies, whatever the length of the log.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from serving import contract
from trainer.data.examples import ITEM_ID, RATING, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.retrieval.features import CANDIDATE_PROBABILITY, EXAMPLE_AGE


def retrieval_training_dataset(manifest: Manifest, batch_size: int, **options: Any) -> tf.data.Dataset:
    """Batches of retrieval training features from the manifest's training shards.

    Args:
        manifest: what `trainer.preprocess` wrote.
        batch_size: examples per batch (per input pipeline under a distribution strategy).
        **options: `Manifest.read` options: shuffle, seed, shuffle_buffer, repeat, input_context, ...

    Returns:
        Dicts of the event_examples features without watch_time and rating, plus example_age [B] float32
        and candidate_probability [B] float32.
    """
    if not manifest.train_item_counts:
        raise DataError(f"{manifest.directory}: the manifest has no training item counts; preprocess again")
    items = np.array(list(manifest.train_item_counts), dtype=object).astype(str)
    counts = np.array(list(manifest.train_item_counts.values()), dtype=np.float64)
    probability = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(items), tf.constant(counts / counts.sum())), default_value=0.0)
    t_max, t_span = float(manifest.t_max), float(manifest.t_span)

    def add_features(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = {name: values for name, values in batch.items() if name not in (WATCH_TIME, RATING)}
        age = (t_max - tf.cast(batch[contract.REQUEST_TIME], tf.float64)) / t_span
        features[EXAMPLE_AGE] = tf.cast(tf.clip_by_value(age, 0.0, 1.0), tf.float32)
        features[CANDIDATE_PROBABILITY] = tf.cast(probability.lookup(batch[ITEM_ID]), tf.float32)
        return features

    return manifest.read("train", batch_size, **options).map(add_features, num_parallel_calls=tf.data.AUTOTUNE)
