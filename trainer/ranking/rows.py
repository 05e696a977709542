"""Ranking training rows: one tf.data path from training examples, in memory or in TFRecord shards, to `fit`.

When the logs hold impressions, each training example is an impression instead
(`trainer.data.examples.impression_examples`) and `ImpressionRecipe` makes its row: candidate_ids [1] (the shown
item), LABELS [1] (clicked) and WEIGHTS [1] (watch_time / unit where clicked, 1 where not): the weighted logistic
regression of Covington et al. 2016 on what users were shown, with no sampled negatives.

Otherwise each training example (`trainer.data.examples.event_examples`, or a record `trainer.preprocess` wrote)
becomes one row: candidate_ids [1 + N] (the watched item, then N negatives), LABELS [1 + N] (1, then 0s) and WEIGHTS
[1 + N] (watch_time / unit for the watch, 1 where it is missing, and 1 for each negative; trainer.ranking.loss).
Examples come from memory (`InMemoryExamples`, `from_tensor_slices` of the example dict) or from the shards
(`StreamedExamples`); `RowRecipe`, which derives everything above, is the same map for both.

Negatives are drawn uniformly from the training vocabulary, never an item the user watched in training (He et
al. 2017 sample the same way; a row may get the same negative twice, as there): neither one of the user's
training items held in memory (`RankingData.seen`; a streamed run holds those of its in-memory sample) nor
the example's own watched item and watch history. Each draw is a hash of (seed,
epoch, example, slot, attempt), so an example's negatives depend on nothing else: not on the order examples
arrive in, the batch they share or the input pipeline that reads them. The same examples give the same rows
from memory and from shards, on one replica or many, and every epoch draws anew.

With `CandidatePools`, the first `from_candidates` negatives of a row come instead from its user's
candidate-generator top unseen items (`ranking.candidate_negatives`): without impression logs these stand in
for what the user was shown and passed over. Uniform negatives teach the ranker to tell a watch from a random
item, which the candidate generator already does; the ranker's job in two-stage serving is to order the
candidate generator's list, and only negatives from that list teach it. Some of them are items the user
watches later (after the training period), the price of having no impressions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np
import pandas as pd

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from recsys_common import contract
from trainer.data.examples import CLICKED, ITEM_ID, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.splits import positive_codes
from trainer.data.tfrecord import EVENTS, Manifest
from trainer.ranking.loss import row_weights
from trainer.ranking.models import LABELS, WEIGHTS

# A training-only input [B, N] float32: the cross-fitted score of each candidate (never in a signature).
OUT_OF_FOLD_SCORE = "retrieval_score_out_of_fold"
# The in-memory index of an example, which the cross-fitted scores of its row are looked up by.
EXAMPLE_ROW = "example_row"
EXAMPLE_KEYS = (contract.USER_ID, contract.REQUEST_TIME, contract.WATCH_HISTORY, ITEM_ID, WATCH_TIME)
_UNKNOWN = -1
# Redraws of a blocked negative before giving up: a user who left 1 item in 500 unwatched needs about 500.
MAX_DRAWS = 10_000


@dataclasses.dataclass(frozen=True)
class CandidatePools:
    """Per user, the candidate generator's top unseen items.

    Attributes:
        users: [U] user ids.
        items: [U, K] object item ids, best first; "" pads a user with fewer than K unseen items.
    """

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or len(self.items) != len(self.users):
            raise ValueError(f"CandidatePools: items must be [U, K] with U = {len(self.users)} users, "
                             f"got shape {self.items.shape}")


class RowScores(Protocol):
    """Scores [R, C] of the candidates [R, C] of training rows, given by their example indices [R] (None: all)."""

    def __call__(self, candidate_ids: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray: ...


Draw = Callable[[tf.Tensor, tf.Tensor, tf.Tensor, int], tf.Tensor]


class NegativeDraws:
    """N negatives per training example, drawn in-graph by the function `in_graph()` returns.

    Args:
        item_ids: [M] the items drawn from (the training vocabulary).
        seen: user -> the items of their training events (never drawn for that user).
        num: N, negatives per example.
        seed: with the epoch, seeds every draw.
        pools: per user, the candidate generator's top unseen items.
        from_candidates: how many of the N come from the user's pool (needs `pools`; a pad or a user without
            a pool falls back to a uniform draw).

    Raises:
        DataError: the vocabulary is empty, or a user has watched every item of it.
        ValueError: `from_candidates` outside [0, num], or candidate negatives without pools.
    """

    def __init__(self, item_ids: Sequence[str] | np.ndarray, seen: Mapping[str, frozenset[str]], num: int,
                 seed: int, pools: CandidatePools | None = None, from_candidates: int = 0) -> None:
        self.items = np.asarray([str(item) for item in item_ids], dtype=object)
        if not len(self.items):
            raise DataError("negative sampling: the item vocabulary is empty")
        if num < 0 or not 0 <= from_candidates <= num:
            raise ValueError(f"negative sampling: needs num_negatives >= 0 and candidate_negatives in "
                             f"[0, num_negatives={num}], got {num} and {from_candidates}")
        if from_candidates and pools is None:
            raise ValueError(f"negative sampling: {from_candidates} candidate negatives per row need the candidate "
                             "generator's pools (CandidatePools), got none")
        self.num, self.seed, self.from_candidates = num, seed, from_candidates
        pool_users = [] if pools is None else [str(user) for user in pools.users]
        self.users = np.asarray(sorted(set(map(str, seen)) | set(pool_users)), dtype=object)
        self.blocked, counts = positive_codes([seen.get(user, frozenset()) for user in self.users], self.items)
        full = np.flatnonzero(counts >= len(self.items))
        if len(full):
            raise DataError(f"negative sampling: user {self.users[full[0]]!r} has watched all {len(self.items)} "
                            "items of the training vocabulary; no negative can be drawn for them")
        self.candidates = self._candidate_codes(pools) if from_candidates and pools is not None else None

    def _candidate_codes(self, pools: CandidatePools) -> np.ndarray:
        """[U + 1, K] int64 vocabulary indices of each user's pool (-1: a pad); the last row is an unknown user's."""
        width = pools.items.shape[1]
        codes = pd.Index(self.items).get_indexer(np.asarray(pools.items, dtype=object).astype(str).ravel())
        codes = np.concatenate([codes.reshape(-1, width), np.full((1, width), _UNKNOWN)])
        rows = pd.Index([str(user) for user in pools.users]).get_indexer(self.users)
        return np.concatenate([codes[rows], np.full((1, width), _UNKNOWN)]).astype(np.int64)

    def in_graph(self) -> Draw:
        """Builds the lookup tables (call it inside the dataset function) and returns the draw:
        (keys [B] str, user ids [B] str, the example's own items [B, W] str, epoch) -> negatives [B, N] str."""
        users, items = _index_table(self.users), _index_table(self.items)
        blocked = tf.constant(np.append(self.blocked, np.iinfo(np.int64).max), tf.int64)
        names = tf.constant(self.items.astype(str))
        candidates = None if self.candidates is None else tf.constant(self.candidates)
        size, num, share = len(self.items), self.num, self.from_candidates

        def draw(keys: tf.Tensor, user_ids: tf.Tensor, own_items: tf.Tensor, epoch: int) -> tf.Tensor:
            salt = keys + f"\x1f{self.seed}\x1f{epoch}"
            user, own = users.lookup(user_ids), items.lookup(own_items)

            def rejected(draws: tf.Tensor) -> tf.Tensor:
                codes = tf.reshape(user[:, None] * size + draws, [-1])
                found = tf.gather(blocked, tf.searchsorted(blocked, codes))
                owned = tf.reduce_any(draws[:, :, None] == own[:, None, :], axis=2)
                return tf.reshape(found == codes, tf.shape(draws)) | owned

            def redraw(attempt: tf.Tensor, draws: tf.Tensor, bad: tf.Tensor) -> tuple[tf.Tensor, ...]:
                fresh = _hashed(salt + tf.strings.as_string(attempt), num, size)
                draws = tf.where(bad, fresh, draws)
                return attempt + 1, draws, rejected(draws)

            first = _hashed(salt + "0", num, size)
            _, draws, bad = tf.while_loop(lambda attempt, draws, bad: tf.reduce_any(bad) & (attempt < MAX_DRAWS),
                                          redraw, (tf.constant(1, tf.int64), first, rejected(first)))
            refused = tf.debugging.Assert(~tf.reduce_any(bad), [
                f"negative sampling: {MAX_DRAWS} draws found no unwatched item for examples of the users",
                tf.boolean_mask(user_ids, tf.reduce_any(bad, axis=1)),
                "whose training items and watch history cover (nearly) the whole vocabulary"], summarize=3)
            with tf.control_dependencies([refused]):
                draws = tf.identity(draws)
            if candidates is not None:
                pool = tf.gather(candidates, tf.where(user >= 0, user, len(self.users)))
                chosen = tf.gather(pool, _hashed(salt + "c", share, pool.shape[1]), batch_dims=1)
                draws = tf.concat([tf.where(chosen >= 0, chosen, draws[:, :share]), draws[:, share:]], axis=1)
            return tf.gather(names, draws)

        return draw


@dataclasses.dataclass(frozen=True)
class RowRecipe:
    """How a batch of training examples becomes training rows.

    Attributes:
        negatives: the negative draws.
        feature_keys: the model's inputs (candidate_ids is made here; the rest are the examples' own).
        watch_time_unit: the watch time of weight 1.
        out_of_fold: cross-fitted scores of the in-memory examples (their rows carry EXAMPLE_ROW), or None.
    """

    negatives: NegativeDraws
    feature_keys: tuple[str, ...]
    watch_time_unit: float
    out_of_fold: RowScores | None = None

    def __post_init__(self) -> None:
        row_weights(tf.zeros([0]), self.watch_time_unit, self.negatives.num)  # refuses a unit that is not positive

    @property
    def example_keys(self) -> tuple[str, ...]:
        """What each example must hold: the model's inputs and what the rows are derived from."""
        keys = [key for key in self.feature_keys if key != contract.CANDIDATE_IDS]
        return tuple(dict.fromkeys([*keys, *EXAMPLE_KEYS]))

    def in_graph(self) -> Callable[[dict[str, tf.Tensor], int], dict[str, tf.Tensor]]:
        """Builds the tables (inside the dataset function) and returns (examples [B], epoch) -> rows [B]."""
        draw = self.negatives.in_graph()
        kept = [key for key in self.feature_keys if key != contract.CANDIDATE_IDS]

        def to_rows(examples: dict[str, tf.Tensor], epoch: int) -> dict[str, tf.Tensor]:
            watched = examples[ITEM_ID]
            keys = tf.strings.join([examples[contract.USER_ID], tf.strings.as_string(examples[contract.REQUEST_TIME]),
                                    watched], separator="\x1f")
            own = tf.concat([watched[:, None], examples[contract.WATCH_HISTORY]], axis=1)
            negatives = draw(keys, examples[contract.USER_ID], own, epoch)
            rows = {key: examples[key] for key in kept}
            rows[contract.CANDIDATE_IDS] = tf.concat([watched[:, None], negatives], axis=1)
            rows[LABELS] = tf.one_hot(tf.zeros_like(watched, tf.int32), 1 + self.negatives.num)
            rows[WEIGHTS] = row_weights(examples[WATCH_TIME], self.watch_time_unit, self.negatives.num)
            if self.out_of_fold is not None:
                rows[OUT_OF_FOLD_SCORE] = self._scores(examples[EXAMPLE_ROW], rows[contract.CANDIDATE_IDS])
            return rows

        return to_rows

    def rows(self, examples: Mapping[str, np.ndarray], epoch: int, indices: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """The rows of in-memory examples (those at `indices`; None: all) in `epoch`, as NumPy with str ids."""
        return _numpy_rows(self.in_graph(), examples, self.example_keys, epoch, indices)

    def example_keys_with_rows(self) -> tuple[str, ...]:
        """`example_keys`, and EXAMPLE_ROW when the rows are scored out of fold."""
        return (*self.example_keys, EXAMPLE_ROW) if self.out_of_fold is not None else self.example_keys

    def _scores(self, example_rows: tf.Tensor, candidate_ids: tf.Tensor) -> tf.Tensor:
        scores = self.out_of_fold

        def score(rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
            assert scores is not None
            return scores(np.char.decode(ids.astype(bytes)).astype(object), rows).astype(np.float32)

        found = tf.numpy_function(score, [example_rows, candidate_ids], tf.float32, stateful=False)
        return tf.ensure_shape(found, candidate_ids.shape)


@dataclasses.dataclass(frozen=True)
class ImpressionRecipe:
    """How a batch of impressions becomes training rows of one candidate each: the shown item.

    Attributes:
        feature_keys: the model's inputs (candidate_ids is made here; the rest are the examples' own).
        watch_time_unit: the watch time of weight 1.
        weighted: weight a click by its watch time (Covington et al. 2016); False: every row weighs 1,
            plain logistic regression on clicks (the paper's baseline).
    """

    feature_keys: tuple[str, ...]
    watch_time_unit: float
    weighted: bool = True

    def __post_init__(self) -> None:
        if not self.watch_time_unit > 0:
            raise ValueError(f"the watch-time unit must be > 0, got {self.watch_time_unit}")

    @property
    def example_keys(self) -> tuple[str, ...]:
        keys = [key for key in self.feature_keys if key != contract.CANDIDATE_IDS]
        return tuple(dict.fromkeys([*keys, ITEM_ID, CLICKED, WATCH_TIME]))

    def example_keys_with_rows(self) -> tuple[str, ...]:
        return self.example_keys

    def in_graph(self) -> Callable[[dict[str, tf.Tensor], int], dict[str, tf.Tensor]]:
        kept = [key for key in self.feature_keys if key != contract.CANDIDATE_IDS]

        def to_rows(examples: dict[str, tf.Tensor], epoch: int) -> dict[str, tf.Tensor]:
            del epoch  # an impression's row is the same every epoch
            clicked = tf.cast(examples[CLICKED], tf.float32)[:, None]
            rows = {key: examples[key] for key in kept}
            rows[contract.CANDIDATE_IDS] = examples[ITEM_ID][:, None]
            rows[LABELS] = clicked
            watch_weight = row_weights(examples[WATCH_TIME], self.watch_time_unit, 0) if self.weighted else 1.0
            rows[WEIGHTS] = tf.where(clicked > 0, watch_weight, 1.0)
            return rows

        return to_rows

    def rows(self, examples: Mapping[str, np.ndarray], epoch: int, indices: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """The rows of in-memory impressions (those at `indices`; None: all), as NumPy with str ids."""
        return _numpy_rows(self.in_graph(), examples, self.example_keys, epoch, indices)


class Recipe(Protocol):
    """How examples become training rows: `RowRecipe` (watches and sampled negatives) or `ImpressionRecipe`."""

    @property
    def feature_keys(self) -> tuple[str, ...]: ...

    def example_keys_with_rows(self) -> tuple[str, ...]: ...

    def in_graph(self) -> Callable[[dict[str, tf.Tensor], int], dict[str, tf.Tensor]]: ...

    def rows(self, examples: Mapping[str, np.ndarray], epoch: int, indices: np.ndarray | None = None
             ) -> dict[str, np.ndarray]: ...


class ExampleSource(Protocol):
    """Training examples, epoch by epoch: `read` gives this input pipeline's batches of one epoch."""

    count: int

    def read(self, epoch: int, batch_size: int, steps: int, context: tf.distribute.InputContext,
             replicas: int) -> tf.data.Dataset: ...


class InMemoryExamples:
    """Examples held in memory (`event_examples`' dict), in a fresh order every epoch.

    With one replica every example, shuffled by (seed, epoch), the last batch smaller. With R replicas the
    examples are shuffled alike on every worker and cut into `steps` global batches (the remainder, under one
    batch, sits out this epoch; the next shuffle draws another), and each input pipeline reads only its slice
    of each global batch.

    Args:
        examples: [R] arrays by name.
        keys: the ones to read (`RowRecipe.example_keys_with_rows`; EXAMPLE_ROW is the index itself).
        seed: with the epoch, seeds the order.
    """

    def __init__(self, examples: Mapping[str, np.ndarray], keys: Sequence[str], seed: int) -> None:
        missing = [key for key in keys if key not in examples and key != EXAMPLE_ROW]
        if missing:
            raise KeyError(f"training examples lack {missing}; they hold {sorted(examples)}")
        self.count = len(examples[contract.USER_ID])
        self.columns = {key: np.arange(self.count) if key == EXAMPLE_ROW else np.asarray(examples[key])
                        for key in keys}
        self.seed = seed
        self._tensors: dict[str, tf.Tensor] | None = None

    def order(self, epoch: int, steps: int, batch_size: int, pipeline: int, pipelines: int, replicas: int
              ) -> np.ndarray:
        """The example indices that input pipeline `pipeline` of `pipelines` reads in `epoch`, in order."""
        order = np.random.default_rng([self.seed, epoch]).permutation(self.count)
        if replicas == 1:
            return order
        return order[:steps * batch_size].reshape(steps, pipelines, -1)[:, pipeline].ravel()

    def read(self, epoch: int, batch_size: int, steps: int, context: tf.distribute.InputContext,
             replicas: int) -> tf.data.Dataset:
        if self._tensors is None:
            self._tensors = {key: tf.constant(values) for key, values in self.columns.items()}
        tensors = self._tensors
        share = self.order(epoch, steps, batch_size, context.input_pipeline_id, context.num_input_pipelines,
                           replicas)
        per_replica = context.get_per_replica_batch_size(batch_size)
        return (tf.data.Dataset.from_tensor_slices(share).batch(per_replica)
                .map(lambda rows: {key: tf.gather(values, rows) for key, values in tensors.items()}))


class StreamedExamples:
    """Examples (or, with `kind` "impressions", impressions) read from a manifest's training shards, whatever the
    log's length, shuffled anew every epoch.

    With one replica every example once (the last batch smaller). With R replicas each input pipeline reads
    its share of the shards (`Manifest.read` with the input context) and takes exactly `steps` per-replica
    batches per local replica, so every replica takes the same number of steps, as the all-reduce needs.
    """

    def __init__(self, manifest: Manifest, seed: int, kind: str = EVENTS) -> None:
        self.manifest, self.seed, self.kind = manifest, seed, kind
        self.count = manifest.examples("train", kind)
        if self.count == 0:
            raise DataError(f"{manifest.directory}: the training split has no {kind}")

    def read(self, epoch: int, batch_size: int, steps: int, context: tf.distribute.InputContext,
             replicas: int) -> tf.data.Dataset:
        per_replica = context.get_per_replica_batch_size(batch_size)
        if replicas == 1:
            return self.manifest.read("train", per_replica, self.kind, shuffle=True, seed=self.seed + epoch)
        local_replicas = context.num_replicas_in_sync // context.num_input_pipelines
        return self.manifest.read("train", per_replica, self.kind, shuffle=True, seed=self.seed + epoch, repeat=True,
                                  drop_remainder=True, input_context=context).take(steps * local_replicas)


class TrainingRows:
    """What `Model.fit` reads: `dataset(start, end)` holds epochs start .. end - 1, `steps` global batches each.

    Args:
        examples: where the examples come from.
        recipe: how they become rows.
        strategy: the strategy the model trains under.
        batch_size: the global batch size.

    Raises:
        ValueError: the batch does not split evenly over the replicas, or exceeds the examples.
    """

    def __init__(self, examples: ExampleSource, recipe: Recipe, strategy: tf.distribute.Strategy,
                 batch_size: int) -> None:
        check_global_batch_size(strategy, batch_size)
        self.examples, self.recipe, self.batch_size = examples, recipe, batch_size
        self.replicas = strategy.num_replicas_in_sync
        count = examples.count
        self.steps = -(-count // batch_size) if self.replicas == 1 else count // batch_size
        if self.steps == 0:
            raise ValueError(f"ranking.batch_size ({batch_size}) exceeds the {count} training examples")

    def dataset(self, start: int, end: int) -> keras.utils.experimental.DatasetCreator:
        """Epochs start .. end - 1 (0-based; at least epoch `start`)."""
        def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
            to_rows = self.recipe.in_graph()
            epochs = [self.examples.read(epoch, self.batch_size, self.steps, context, self.replicas)
                      .map(lambda examples, epoch=epoch: to_rows(examples, epoch), num_parallel_calls=tf.data.AUTOTUNE)
                      for epoch in range(start, max(end, start + 1))]
            return functools.reduce(tf.data.Dataset.concatenate, epochs).prefetch(tf.data.AUTOTUNE)

        return keras.utils.experimental.DatasetCreator(dataset_fn)


def check_global_batch_size(strategy: tf.distribute.Strategy, batch_size: int) -> None:
    """Raises ValueError unless the global `batch_size` splits into equal batches over the strategy's replicas."""
    replicas = strategy.num_replicas_in_sync
    if batch_size % replicas:
        raise ValueError(f"ranking.batch_size ({batch_size}) must be a multiple of the {replicas} replicas "
                         "training in sync")


def _hashed(salts: tf.Tensor, columns: int, buckets: int) -> tf.Tensor:
    """[B, columns] int64 in [0, buckets): a fingerprint of (salt, column) for every salt [B] and column."""
    suffixes = tf.constant([f"\x1f{column}" for column in range(columns)], tf.string)
    return tf.strings.to_hash_bucket_fast(salts[:, None] + suffixes[None, :], buckets)


def _index_table(keys: np.ndarray) -> tf.lookup.StaticHashTable:
    """str key -> its index in `keys`; -1 for any other."""
    names, indices = np.asarray(keys, dtype=object).astype(str), np.arange(len(keys), dtype=np.int64)
    if not len(names):  # a table cannot be empty; this one key maps to "unknown" like every other
        names, indices = np.array(["\x00"]), np.array([_UNKNOWN], dtype=np.int64)
    return tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(names, tf.string), tf.constant(indices)),
        default_value=_UNKNOWN)


def _numpy_rows(to_rows: Callable[[dict[str, tf.Tensor], int], dict[str, tf.Tensor]],
                examples: Mapping[str, np.ndarray], keys: Sequence[str], epoch: int, indices: np.ndarray | None
                ) -> dict[str, np.ndarray]:
    """`to_rows` of the in-memory examples at `indices` (None: all; their EXAMPLE_ROW), as NumPy with str ids."""
    indices = np.arange(len(examples[contract.USER_ID])) if indices is None else np.asarray(indices)
    batch = {key: tf.constant(np.asarray(examples[key])[indices]) for key in keys}
    batch[EXAMPLE_ROW] = tf.constant(indices.astype(np.int64))
    rows = tf.function(lambda examples: to_rows(examples, epoch))(batch)
    return {key: _as_numpy(value) for key, value in rows.items()}


def _as_numpy(values: tf.Tensor) -> np.ndarray:
    array = values.numpy()
    if array.dtype.kind in "SO":
        return np.char.decode(array.astype(bytes)).astype(object)
    return array
