"""The candidate generator's training input: one derivation, whether the examples are in memory or in shards.

Both inputs give `tf.data` batches of the `event_examples` features (without watch_time and rating)
plus the two features training derives, computed in the input pipeline by `with_derived_features`
alone:

    example_age            (t_max - request_time) / t_span clipped to [0, 1] (Covington et al. 2016);
    candidate_probability  the item's share of the training examples: its chance to be an in-batch
                           negative, for the logQ correction.

`InMemoryTrainingInput` slices arrays in memory (`make_dataset`); `ShardedTrainingInput` streams the
TFRecord shards of `trainer.preprocess` (memory: the shuffle buffer and one table of item counts).
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from recsys_common import contract
from trainer.data.examples import ITEM_ID, RATING, WATCH_TIME
from trainer.data.pipeline import make_dataset
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.retrieval.features import CANDIDATE_PROBABILITY, EXAMPLE_AGE

NOT_MODEL_INPUTS = (WATCH_TIME, RATING) + tuple(spec.name for spec in contract.RANKING_CONTEXT_INPUTS)


class TrainingInput(Protocol):
    """Training examples for `trainer.retrieval.train.fit`: their count, shuffled batches, and a first batch."""

    def __len__(self) -> int: ...

    def batches(self, batch_size: int, seed: int, **options: Any) -> tf.data.Dataset: ...

    def first_batch(self, rows: int) -> dict[str, tf.Tensor]: ...


def with_derived_features(examples: tf.data.Dataset, item_counts: Mapping[str, int], t_max: int, t_span: int
                          ) -> tf.data.Dataset:
    """Batches of `examples` without watch_time and rating, plus example_age [B] and candidate_probability [B].

    Args:
        examples: batches of `event_examples` features (request_time [B] int64, item_id [B] string, ...).
        item_counts: training examples per item id (items not in it get probability 0).
        t_max: the latest training timestamp.
        t_span: the training time range (> 0).

    Raises:
        DataError: no item counts, or a t_span that is not positive.
    """
    if not item_counts:
        raise DataError("retrieval training input: no training item counts (a manifest written before they "
                        "were recorded: preprocess again)")
    if t_span <= 0:
        raise DataError(f"retrieval training input: t_span must be > 0, got {t_span}")
    items = np.array(list(item_counts), dtype=object).astype(str)
    counts = np.array(list(item_counts.values()), dtype=np.float64)
    probability = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(items), tf.constant(counts / counts.sum())), default_value=0.0)

    def add_features(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        features = {name: values for name, values in batch.items() if name not in NOT_MODEL_INPUTS}
        age = (float(t_max) - tf.cast(batch[contract.REQUEST_TIME], tf.float64)) / float(t_span)
        features[EXAMPLE_AGE] = tf.cast(tf.clip_by_value(age, 0.0, 1.0), tf.float32)
        features[CANDIDATE_PROBABILITY] = tf.cast(probability.lookup(batch[ITEM_ID]), tf.float32)
        return features

    return examples.map(add_features, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


@dataclasses.dataclass(frozen=True)
class InMemoryTrainingInput:
    """Training examples held in memory: `event_examples` arrays [N], with the training time range."""

    examples: dict[str, np.ndarray]
    t_max: int
    t_span: int

    def __len__(self) -> int:
        return len(self.examples[ITEM_ID])

    def batches(self, batch_size: int, seed: int, shuffle: bool = True, **options: Any) -> tf.data.Dataset:
        """The examples in batches (reshuffled every pass when `shuffle`), with the derived features."""
        return self._batches(self.examples, batch_size, shuffle=shuffle, seed=seed, **options)

    def first_batch(self, rows: int) -> dict[str, tf.Tensor]:
        """The first `rows` examples with the derived features (what building the model needs), converting only them."""
        head = {name: values[:rows] for name, values in self.examples.items()}
        return next(iter(self._batches(head, rows, shuffle=False, seed=0)))

    def _batches(self, examples: dict[str, np.ndarray], batch_size: int, **options: Any) -> tf.data.Dataset:
        inputs = {name: values for name, values in examples.items() if name not in NOT_MODEL_INPUTS}
        counts = Counter(np.asarray(self.examples[ITEM_ID], dtype=object).astype(str).tolist())
        return with_derived_features(make_dataset(inputs, batch_size, **options), counts, self.t_max, self.t_span)


@dataclasses.dataclass(frozen=True)
class ShardedTrainingInput:
    """The training split of a preprocessed folder (streamed, never loaded)."""

    manifest: Manifest

    def __len__(self) -> int:
        return self.manifest.examples("train")

    def batches(self, batch_size: int, seed: int, shuffle: bool = True, **options: Any) -> tf.data.Dataset:
        """Batches of the training shards (`Manifest.read` options: shuffle_buffer, input_context, ...)."""
        manifest = self.manifest
        if not manifest.train_item_counts:
            raise DataError(f"{manifest.directory}: the manifest has no training item counts; preprocess again")
        examples = manifest.read("train", batch_size, shuffle=shuffle, seed=seed, **options)
        return with_derived_features(examples, manifest.train_item_counts, manifest.t_max, manifest.t_span)

    def first_batch(self, rows: int) -> dict[str, tf.Tensor]:
        """The first `rows` examples of the shards with the derived features."""
        return next(iter(self.batches(rows, seed=0, shuffle=False)))
