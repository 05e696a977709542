"""Ranking training rows streamed from the TFRecord shards (`data.prepared_dir`), whatever the log's length.

Each epoch reads every training example of the manifest, shuffled anew, and adds in the input
pipeline what `trainer.ranking.train.EpochExamples` adds in memory: candidate_ids [B, 1 + N] (the
watched item, then N items drawn uniformly from the training vocabulary, fresh every epoch),
labels [B, 1 + N] and weights [B, 1 + N] (watch time / unit for the watched item, 1 for the rest).

The in-memory sampler never draws an item the user watched anywhere in training; knowing that takes
per-user state as large as the log. The stream rejects what each example itself holds: its watched
item and its watch history (the items the user watched before it). An item the user watches later
in training can therefore be drawn as a negative, with probability at most (later watches) / (size
of the vocabulary) per draw.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from recsys_common import contract
from trainer.data.examples import ITEM_ID, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.ranking.models import LABELS, WEIGHTS

NOT_IN_POOL = -1


def draw_negatives(blocked: np.ndarray, num: int, pool_size: int, rng: np.random.Generator) -> np.ndarray:
    """[B, num] int64 pool indices drawn uniformly, none equal to an index in the same row of `blocked`.

    Args:
        blocked: [B, W] int64 pool indices each row must avoid (NOT_IN_POOL entries block nothing).
        num: negatives per row.
        pool_size: indices are drawn from [0, pool_size).
        rng: the generator to draw with.

    Raises:
        DataError: a row blocks the whole pool.
    """
    if pool_size <= blocked.shape[1] and _fully_blocked(blocked, pool_size):
        raise DataError(f"negative sampling: a training example's history covers all {pool_size} items of the "
                        "vocabulary; no negative can be drawn for it")
    draws = rng.integers(0, pool_size, (blocked.shape[0], num))
    bad = _collides(draws, blocked)
    while bad.any():
        draws[bad] = rng.integers(0, pool_size, int(bad.sum()))
        bad = _collides(draws, blocked)
    return draws


def check_global_batch_size(strategy: tf.distribute.Strategy, batch_size: int) -> None:
    """Raises ValueError unless the global `batch_size` splits into equal batches over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"ranking.batch_size ({batch_size}) must be a multiple of the {replicas} replicas "
                         "training in sync")


class StreamedRows:
    """Training rows read from `manifest`'s training shards: `rows.dataset(start, end)` for `Model.fit`.

    With one replica each epoch reads every example once (the last batch may be smaller). With R
    replicas each input pipeline reads its share of the shards (`Manifest.read` with the input
    context) and takes exactly `examples // batch_size` per-replica batches, so every replica takes
    the same number of steps, as the all-reduce needs.

    Args:
        manifest: what `trainer.preprocess` wrote.
        strategy: the strategy the model trains under.
        feature_keys: the model's inputs (candidate_ids is added here).
        item_ids: [M] the training vocabulary the negatives are drawn from.
        num_negatives: N.
        batch_size: the global batch size.
        watch_time_unit: the watch time of weight 1.
        seed: with the epoch, seeds the shuffle and the negatives.
    """

    def __init__(self, manifest: Manifest, strategy: tf.distribute.Strategy, feature_keys: Sequence[str],
                 item_ids: Sequence[str], num_negatives: int, batch_size: int, watch_time_unit: float,
                 seed: int) -> None:
        if not len(item_ids):
            raise DataError("negative sampling: the item vocabulary is empty")
        check_global_batch_size(strategy, batch_size)
        self.manifest, self.replicas = manifest, strategy.num_replicas_in_sync
        self.keys = tuple(key for key in feature_keys if key != contract.CANDIDATE_IDS)
        self.pool = np.asarray([str(item) for item in item_ids], dtype=str)
        self.num_negatives, self.batch_size = num_negatives, batch_size
        self.unit, self.seed = float(watch_time_unit), seed
        self.examples = manifest.examples("train")
        if self.examples == 0:
            raise DataError(f"{manifest.directory}: the training split has no examples")
        self.steps = -(-self.examples // batch_size) if self.replicas == 1 else self.examples // batch_size
        if self.steps == 0:
            raise ValueError(f"ranking.batch_size ({batch_size}) exceeds the {self.examples} training examples")

    def dataset(self, start: int, end: int) -> keras.utils.experimental.DatasetCreator:
        """Epochs start .. end - 1 (0-based; at least epoch `start`), `steps` global batches each."""
        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = context.get_per_replica_batch_size(self.batch_size)
            local_replicas = context.num_replicas_in_sync // context.num_input_pipelines

            def epoch_rows(epoch: int) -> tf.data.Dataset:
                if self.replicas == 1:
                    return self._rows(per_replica, epoch, None, repeat=False)
                return self._rows(per_replica, epoch, context, repeat=True).take(self.steps * local_replicas)

            epochs = [epoch_rows(epoch) for epoch in range(start, max(end, start + 1))]
            return functools.reduce(tf.data.Dataset.concatenate, epochs).prefetch(tf.data.AUTOTUNE)

        return keras.utils.experimental.DatasetCreator(dataset_fn)

    def _rows(self, batch_size: int, epoch: int, context: tf.distribute.InputContext | None,
              repeat: bool) -> tf.data.Dataset:
        pipeline = 0 if context is None else int(context.input_pipeline_id)
        rng = np.random.default_rng([self.seed, epoch, pipeline])
        codes = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(self.pool), tf.range(len(self.pool), dtype=tf.int64)),
            default_value=NOT_IN_POOL)
        pool = tf.constant(self.pool)

        def negatives(blocked: np.ndarray) -> np.ndarray:
            return draw_negatives(blocked, self.num_negatives, len(self.pool), rng)

        def to_rows(batch: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
            positive = batch[ITEM_ID]
            blocked = codes.lookup(tf.concat([positive[:, None], batch[contract.WATCH_HISTORY]], axis=1))
            drawn = tf.numpy_function(negatives, [blocked], tf.int64, stateful=True)
            drawn = tf.ensure_shape(drawn, [None, self.num_negatives])
            rows = {key: batch[key] for key in self.keys}
            rows[contract.CANDIDATE_IDS] = tf.concat([positive[:, None], tf.gather(pool, drawn)], axis=1)
            rows[LABELS] = tf.one_hot(tf.zeros_like(drawn[:, 0]), 1 + self.num_negatives)
            watch_time = batch[WATCH_TIME]
            weight = tf.where(tf.math.is_finite(watch_time), watch_time / self.unit, 1.0)
            rows[WEIGHTS] = tf.concat([weight[:, None], tf.ones_like(drawn, tf.float32)], axis=1)
            return rows

        read = self.manifest.read("train", batch_size, shuffle=True, seed=self.seed + epoch, repeat=repeat,
                                  drop_remainder=repeat, input_context=context)
        return read.map(to_rows)


def _collides(draws: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    return (draws[:, :, None] == blocked[:, None, :]).any(axis=2)


def _fully_blocked(blocked: np.ndarray, pool_size: int) -> bool:
    return any(len(set(row[row != NOT_IN_POOL].tolist())) >= pool_size for row in blocked)
