"""The retrieval model's training input read from preprocessed TFRecord shards (`trainer.preprocess`).

The same features as `trainer.retrieval.train.training_features_of` on the in-memory examples,
computed in the input pipeline instead: example_age from request_time and the manifest's
t_max / t_span, candidate_probability (logQ) from the manifest's training item counts. Memory is
the shuffle buffer and one table of item frequencies, whatever the length of the log.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from recsys_common import contract
from trainer.data.examples import ITEM_ID, RATING, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.retrieval.evaluate import EvalSet
from trainer.retrieval.features import CANDIDATE_PROBABILITY, EXAMPLE_AGE

EarlierItems = Callable[[Sequence[str]], dict[str, set[str]]]


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


@dataclasses.dataclass(frozen=True)
class ShardedTrainingInput:
    """The training split of a preprocessed folder, for `trainer.retrieval.train.fit` (streamed, never loaded)."""

    manifest: Manifest

    def __len__(self) -> int:
        return self.manifest.examples("train")

    def batches(self, batch_size: int, seed: int, **options: Any) -> tf.data.Dataset:
        """One shuffled pass over the training shards (`retrieval_training_dataset`; options: shuffle_buffer...)."""
        return retrieval_training_dataset(self.manifest, batch_size, shuffle=True, seed=seed, **options)


def eval_set_from_examples(examples: dict[str, np.ndarray], catalog_item_ids: np.ndarray, request_time: int,
                           max_users: int, seed: int, earlier_items: EarlierItems | None = None) -> EvalSet:
    """The temporal protocol's requests built from one period's examples (no event log in memory).

    Each user's request is the context of their first example in the period (its history is every
    earlier event, as a request at the period start sees it). The seen items (excluded, and not
    counted as answers) are that context's watch history plus `earlier_items` of the user: with
    `items_per_user` over the earlier shards this is `build_eval_set`'s protocol, except that the
    seeded sample of `max_users` is drawn before users left without unseen answers are dropped.

    Args:
        examples: `event_examples` arrays of the period's N events, in time order.
        catalog_item_ids: [M] the ranked corpus.
        request_time: the period start (every request's time).
        max_users, seed: a seeded sample of at most this many of the period's users.
        earlier_items: user ids -> the item ids each saw before the period; None = only the last H.
    """
    item_index = pd.Index(catalog_item_ids)
    users = np.asarray(examples[contract.USER_ID], dtype=object)
    first_row = pd.Series(np.arange(len(users))).groupby(users).min()
    candidates = np.array(sorted(first_row.index), dtype=object)
    if len(candidates) > max_users:
        candidates = np.sort(np.random.default_rng(seed).choice(candidates, max_users, replace=False))
    earlier = earlier_items(candidates.tolist()) if earlier_items is not None else {}
    targets = pd.Series(item_index.get_indexer(np.asarray(examples[ITEM_ID], dtype=object))).groupby(users)
    seen: dict[str, np.ndarray] = {}
    relevant: dict[str, np.ndarray] = {}
    for user in candidates:
        history = np.concatenate([examples[contract.WATCH_HISTORY][first_row[user]], list(earlier.get(user, ()))])
        rows = item_index.get_indexer(history.astype(object))
        seen[user] = np.unique(rows[rows >= 0])
        relevant[user] = np.setdiff1d(targets.get_group(user).to_numpy(), seen[user])
    user_ids = [user for user in candidates if len(relevant[user])]
    return _eval_set(examples, first_row, user_ids, seen, relevant, request_time)


def items_per_user(manifest: Manifest, splits: Sequence[str], user_ids: Sequence[str]) -> dict[str, set[str]]:
    """The item ids of `user_ids`' examples in `splits`, in one streaming pass (memory ~ those users' items)."""
    wanted = np.asarray(list(user_ids), dtype=object).astype(str)
    found: dict[str, set[str]] = {}
    for split in splits:
        if not manifest.examples(split):
            continue
        for batch in manifest.read(split, 4096).as_numpy_iterator():
            users = batch[contract.USER_ID].astype(str)
            mask = np.isin(users, wanted)
            for user, item in zip(users[mask].tolist(), batch[ITEM_ID][mask].astype(str).tolist()):
                found.setdefault(user, set()).add(item)
    return found


def _eval_set(examples: dict[str, np.ndarray], first_row: pd.Series, user_ids: list[str],
              seen: dict[str, np.ndarray], relevant: dict[str, np.ndarray], request_time: int) -> EvalSet:
    rows = first_row[user_ids].to_numpy() if user_ids else np.zeros(0, np.int64)
    queries = {spec.name: np.asarray(examples[spec.name])[rows] for spec in contract.RETRIEVAL_INPUTS}
    queries[contract.REQUEST_TIME] = np.full(len(rows), request_time, dtype=np.int64)
    seen_users = [np.full(len(seen[user]), row, dtype=np.int64) for row, user in enumerate(user_ids)]
    seen_items = [seen[user].astype(np.int64) for user in user_ids]
    return EvalSet(queries, [relevant[user] for user in user_ids],
                   np.concatenate(seen_users or [np.zeros(0, np.int64)]),
                   np.concatenate(seen_items or [np.zeros(0, np.int64)]))
