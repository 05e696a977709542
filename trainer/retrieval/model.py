"""The candidate generation network of Covington et al. (2016) as a TFRS two-tower model.

Query tower: user id, the masked mean of the watched items' embeddings, the masked mean of
the search-token embeddings, gender, age bucket, occupation, region and the example age
(`example_age` in [0, 1] during training; absent = 0 at serving, as in the paper), concatenated
and passed through a ReLU tower. Candidate tower: item id, the mean of its genre and title
token embeddings and its age at the end of training, through a tower of the same shape.

Unknown values never fail and never add noise: padding ("", lookup index 0) and
out-of-vocabulary values (index 1, e.g. a user or item unseen in training) embed to zero
vectors and are left out of the means, so an unknown user with an empty history is
represented by whatever else is known about them.

The candidate tower reads an item's genres, title tokens and release time from the item
catalogue given at construction (constant tables indexed by the item id), so training and
indexing take item ids only. Towers: `tower_layers` = [h1, ..., d]: ReLU layers h1.. and a
linear output of size d (the embedding both towers share); `embedding_dim` is the size of each
input feature embedding.

No file IO here: the model is built from arrays the data layer provides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recsys_common import contract
from trainer.config import RetrievalConfig
from trainer.context import ModelContext
from trainer.data.examples import ITEM_ID
from trainer.data.schema import SECONDS_PER_DAY
from trainer.data.vocab import NUM_RESERVED
from trainer.fitting import EXAMPLE_LOSS
from trainer.layers import AgeBucket, IdEmbedding, LookupEmbedding, string_lookup
from trainer.retrieval.features import CANDIDATE_PROBABILITY, EXAMPLE_AGE, QUERY_INPUTS, FeatureSet


def tower(layer_sizes: Sequence[int], name: str) -> keras.Sequential:
    """ReLU layers for all sizes but the last, then a linear layer of the last size."""
    layers: list[keras.layers.Layer] = [keras.layers.Dense(size, activation="relu") for size in layer_sizes[:-1]]
    layers.append(keras.layers.Dense(layer_sizes[-1]))
    return keras.Sequential(layers, name=name)


class QueryTower(keras.Model):
    """User context -> query embedding [B, d].

    Inputs (a dict; keys of inactive features may be absent): user_id [B] string,
    watch_history [B, H] string, search_history [B, S] string, gender, occupation, region [B]
    string, age [B] int64, example_age [B] float32 (absent = 0, the serving value).
    """

    def __init__(self, config: RetrievalConfig, context: ModelContext, features: FeatureSet,
                 history_items: LookupEmbedding) -> None:
        super().__init__(name="query_tower")
        self.features = features
        vocab, dim = context.vocab, config.embedding_dim
        self.categorical: dict[str, LookupEmbedding] = {}
        for name, values in ((contract.USER_ID, vocab.user_ids), (contract.GENDER, vocab.genders),
                             (contract.OCCUPATION, vocab.occupations), (contract.REGION, vocab.regions)):
            if getattr(self.features, name) and len(values):
                self.categorical[name] = LookupEmbedding(values, dim, name=f"{name}_emb")
        self.history_items = history_items if self.features.watch_history else None
        self.history_length = context.history_length
        self.search_tokens: LookupEmbedding | None = None
        if self.features.search_history and len(vocab.query_tokens):
            self.search_tokens = LookupEmbedding(vocab.query_tokens, dim, name="search_emb")
        self.age_bucket = AgeBucket(context.age_boundaries, name="age_bucket")
        self.age_embedding = IdEmbedding(self.age_bucket.num_buckets, dim, name="age_emb")
        self.tower = tower(config.tower_layers, "query_mlp")
        self.l2_normalize = config.l2_normalize

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features.enabled()}

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        parts = [embedding(inputs[name]) for name, embedding in self.categorical.items()]
        if self.history_items is not None:
            parts.append(self.history_items.history_mean(inputs[contract.WATCH_HISTORY], self.history_length))
        if self.search_tokens is not None:
            parts.append(self.search_tokens.history_mean(inputs[contract.SEARCH_HISTORY]))
        if self.features.age:
            parts.append(self.age_embedding(self.age_bucket(inputs[contract.AGE])))
        if self.features.example_age:
            parts.append(_example_age_features(inputs, batch_like=inputs[contract.USER_ID]))
        output = self.tower(tf.concat(parts, axis=1), training=training)
        return tf.math.l2_normalize(output, axis=1) if self.l2_normalize else output


def _example_age_features(inputs: dict[str, tf.Tensor], batch_like: tf.Tensor) -> tf.Tensor:
    """[x, x^2, sqrt(x)] of the example age (the paper's powers of a normalised continuous feature)."""
    if EXAMPLE_AGE in inputs:
        age = tf.clip_by_value(tf.cast(inputs[EXAMPLE_AGE], tf.float32), 0.0, 1.0)
    else:
        age = tf.zeros(tf.shape(batch_like)[:1], tf.float32)
    return tf.stack([age, tf.square(age), tf.sqrt(age)], axis=1)


class CandidateTower(keras.Model):
    """Item ids [B] string -> candidate embeddings [B, d], with item features from static catalogue tables."""

    def __init__(self, config: RetrievalConfig, context: ModelContext, features: FeatureSet,
                 items: LookupEmbedding) -> None:
        super().__init__(name="candidate_tower")
        self.features = features
        vocab, catalog, dim = context.vocab, context.catalog, config.embedding_dim
        self.items = items
        self.catalog_rows = string_lookup([str(i) for i in catalog.item_ids])
        self.token_tables: list[tuple[tf.Tensor, IdEmbedding]] = []
        for active, values, table in ((self.features.item_genres, vocab.genres, catalog.genres),
                                      (self.features.item_title, vocab.title_tokens, catalog.title_tokens)):
            if active and len(values) and np.shape(table)[1]:
                self.token_tables.append((_token_table(values, table), IdEmbedding(len(values), dim)))
        self.item_age_table = _item_age_table(catalog.release_time, context.t_max) if self.features.item_age else None
        self.tower = tower(config.tower_layers, "candidate_mlp")
        self.l2_normalize = config.l2_normalize

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features.enabled()}

    def call(self, item_ids: tf.Tensor, training: bool = False) -> tf.Tensor:
        parts = [self.items(item_ids)]
        rows = self.catalog_rows(item_ids)
        for table, embedding in self.token_tables:
            parts.append(embedding.mean(tf.gather(table, rows)))
        if self.item_age_table is not None:
            parts.append(tf.gather(self.item_age_table, rows))
        output = self.tower(tf.concat(parts, axis=1), training=training)
        return tf.math.l2_normalize(output, axis=1) if self.l2_normalize else output


def _token_table(vocabulary: Sequence[str], tokens: np.ndarray) -> tf.Tensor:
    """[M + 2, T] int64 lookup indices of each catalogue row's tokens; rows 0, 1 (unknown item) are padding."""
    indices = string_lookup(vocabulary)(tf.constant(np.asarray(tokens, dtype=object).astype(str)))
    padding = tf.zeros([NUM_RESERVED, tf.shape(indices)[1]], tf.int64)
    return tf.concat([padding, indices], axis=0)


def _item_age_table(release_time: np.ndarray, t_max: int) -> tf.Tensor:
    """[M + 2, 2] float32: (log1p(age in days) / its catalogue maximum, 1 if the release time is known)."""
    release = np.asarray(release_time, dtype=np.int64)
    known = release > 0
    days = np.where(known, np.maximum(t_max - release, 0) / SECONDS_PER_DAY, 0.0)
    log_days = np.log1p(days)
    scale = max(float(log_days.max(initial=0.0)), 1.0)
    table = np.stack([log_days / scale, known.astype(np.float64)], axis=1).astype(np.float32)
    return tf.constant(np.concatenate([np.zeros((NUM_RESERVED, 2), np.float32), table]))


class RetrievalModel(tfrs.models.Model):
    """The two towers and the in-batch softmax retrieval task.

    Built from the config, the run's `trainer.context.ModelContext` (vocabularies, catalogue, t_max,
    age boundaries, history length) and the active inputs (`FeatureSet`).

    Training batches hold the query inputs, `item_id` [B] string (the watched item) and,
    with logQ correction, `candidate_probability` [B] float32 (the item's sampling probability).

    The task's loss sums over the batch, and Keras reports the last batch's value as "loss";
    `example_loss` (in the `fit` history) is the mean loss per example over the epoch.
    """

    def __init__(self, config: RetrievalConfig, context: ModelContext, features: FeatureSet) -> None:
        super().__init__()
        items = LookupEmbedding(context.vocab.item_ids, config.embedding_dim, name="item_id_emb")
        history_items = items if config.share_item_embeddings else LookupEmbedding(
            context.vocab.item_ids, config.embedding_dim, name="history_item_emb")
        self.query_tower = QueryTower(config, context, features, history_items)
        self.candidate_tower = CandidateTower(config, context, features, items)
        self.logq_correction = config.logq_correction
        self.remove_accidental_hits = config.remove_accidental_hits
        self.task = tfrs.tasks.Retrieval(
            temperature=None if config.temperature == 1.0 else config.temperature,
            remove_accidental_hits=config.remove_accidental_hits,
        )
        self.example_loss = keras.metrics.Mean(name=EXAMPLE_LOSS)

    def create_weights(self, features: dict[str, tf.Tensor]) -> None:
        """Creates the towers' weights (as a first training step would) from a training batch, so that a
        checkpoint restores into them at once."""
        self.query_tower(features)
        self.candidate_tower(features[ITEM_ID])

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        queries = self.query_tower(features, training=training)
        candidates = self.candidate_tower(features[ITEM_ID], training=training)
        loss = self.task(
            queries,
            candidates,
            candidate_sampling_probability=features[CANDIDATE_PROBABILITY] if self.logq_correction else None,
            candidate_ids=features[ITEM_ID] if self.remove_accidental_hits else None,
            compute_metrics=False,
        )
        batch = tf.cast(tf.shape(queries)[0], loss.dtype)
        self.example_loss.update_state(loss / batch, sample_weight=batch)
        return loss


def embed_items(candidate_tower: CandidateTower, item_ids: np.ndarray, batch_size: int = 8192) -> np.ndarray:
    """Candidate embeddings of `item_ids` [M] -> [M, d] float32."""
    ids = np.asarray(item_ids, dtype=object).astype(str)
    chunks = [candidate_tower(tf.constant(ids[i:i + batch_size])).numpy() for i in range(0, len(ids), batch_size)]
    return np.concatenate(chunks) if chunks else np.zeros((0, candidate_tower.tower.layers[-1].units), np.float32)


def embed_queries(query_tower: QueryTower, features: dict[str, np.ndarray], batch_size: int = 4096) -> np.ndarray:
    """Query embeddings of a feature dict (rows [N]) -> [N, d] float32; missing example_age = 0."""
    names = [name for name in QUERY_INPUTS if name in features]
    size = len(features[contract.USER_ID])
    chunks = []
    for start in range(0, size, batch_size):
        batch = {name: tf.constant(_tensor_ready(features[name][start:start + batch_size])) for name in names}
        chunks.append(query_tower(batch).numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, query_tower.tower.layers[-1].units), np.float32)


def _tensor_ready(array: np.ndarray) -> np.ndarray:
    array = np.asarray(array)
    return array.astype(str) if array.dtype == object else array
