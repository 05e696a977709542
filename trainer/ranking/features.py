"""The YouTube ranking features (Covington et al. 2016, section 4), computed inside the model.

Every feature is computed in-graph from the serving signature's inputs (`watch_history`,
`candidate_ids`, `request_time`, demographics) and the item catalogue tables the model
holds, so training and serving run the same code and cannot skew.

Continuous features, one value per (user, candidate):
    genre_watch_count      the user's watches of the candidate's genres: for each genre of the
                           candidate, the number of history items with that genre; the largest.
    genre_positions_since  how many watches ago the user last watched one of the candidate's
                           genres (0 = the latest watch; NEVER_WATCHED if never). The signature
                           carries no history timestamps, so recency is counted in watches.
    example_age            (t_max - request_time) / t_span clipped to [0, 1]. A serving request
                           (request_time >= t_max) and an unknown request_time (0) give 0.
    item_age_days          days from the candidate's release to request_time (t_max when the
                           request time is unknown), >= 0; 0 with `item_age_known` = 0 when
                           the release time is unknown.
    channel_watch_count    the user's watches of the candidate's channel (items with channels only).
    channel_seconds_since  seconds from the user's last watch of the candidate's channel to request_time,
                           from `watch_history_times` (aligned with watch_history); NEVER_SECONDS when
                           never, or when the request carries no times or no request_time.
    previous_impressions   how often the candidate is in the user's `impression_history` (logs with
                           impressions only): the paper's count of previous impressions, which lets the
                           ranker demote what the user keeps passing over.
    language_match         1 when the user's `language` is the candidate's, 0 when they differ, 0.5 when
                           either is unknown (data with user and item languages only).
    retrieval_score        the candidate generator's score, when the model holds a scorer.
The paper's count of previous watches of the candidate itself is not a feature: the client never
ranks an item the user has watched, so it would be 0 in serving.
Each is normalised to [0, 1) by its training-set quantiles (the empirical CDF, linear between
quantiles, ties at their mid-rank), and x, x^2 and sqrt(x) all enter the network.

Categorical features: gender, occupation, region and the age bucket of the user, the mean
embedding of the candidate's genres and the mean embedding of the watched items (both means
leave out padding and ids outside the training vocabulary: an unknown id carries no signal). A feature
the data lacks (`ModelContext.available`) is left out of the model altogether.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from recsys_common import contract
from trainer.context import ModelContext
from trainer.data.schema import SECONDS_PER_DAY
from trainer.data.vocab import NUM_RESERVED, OOV_INDEX
from trainer.layers import AgeBucket, IdEmbedding, LookupEmbedding, most_recent, string_lookup

NEVER_WATCHED = 10_000.0
NEVER_SECONDS = 10 * 365 * SECONDS_PER_DAY  # "never watched" for the seconds-since features: ten years
_BELOW_ONE = float(np.nextafter(np.float32(1.0), np.float32(0.0)))
GENRE_FEATURES = ("genre_watch_count", "genre_positions_since")
CHANNEL_FEATURES = ("channel_watch_count", "channel_seconds_since")
DEMOGRAPHICS = ((contract.GENDER, "gender", "genders"), (contract.OCCUPATION, "occupation", "occupations"),
                (contract.REGION, "region", "regions"))


class CatalogTables(keras.layers.Layer):
    """The item catalogue as lookup tables: candidate id -> genres, release time, channel, language.

    Row 0 is the padding id "", row 1 an id outside the catalogue (no genres, unknown release, channel
    code 0 = none, language "").
    """

    def __init__(self, space: ModelContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        catalog = space.catalog
        self.rows = string_lookup([str(i) for i in catalog.item_ids])
        codes, multi_hot = _genre_tables(catalog.genres, space.vocab.genres)
        release_time = np.asarray(catalog.release_time, dtype=np.int64)
        known = release_time > 0
        self.genre_codes = self._constant("genre_codes", codes)
        self.genre_multi_hot = self._constant("genre_multi_hot", multi_hot)
        self.release_days = self._constant(
            "release_days", _with_reserved_rows(np.where(known, release_time / SECONDS_PER_DAY, 0.0)))
        self.release_known = self._constant("release_known", _with_reserved_rows(known.astype(np.float32)))
        channels = pd.Series(catalog.channels, dtype=object)
        channel_codes = pd.factorize(channels.mask(channels == ""))[0] + 1  # 0: no channel
        self.channel_codes = self._constant("channel_codes", _with_reserved_rows(channel_codes.astype(np.int64)))
        self.languages = tf.constant(_with_reserved_rows(np.asarray(catalog.languages, dtype=object).astype(str)))

    def _constant(self, name: str, value: np.ndarray) -> tf.Variable:
        """A non-trainable weight holding `value`, so that the SavedModel carries the table."""
        dtype = tf.int64 if value.dtype.kind in "iu" else tf.float32
        return self.add_weight(name=name, shape=value.shape, dtype=dtype, trainable=False,
                               initializer=tf.constant_initializer(value))

    def call(self, item_ids: tf.Tensor) -> tf.Tensor:
        """Catalogue rows of `item_ids` (any shape, string) as int64 of the same shape."""
        return self.rows(item_ids)


class QuantileNormalizer(keras.layers.Layer):
    """Maps each continuous feature to [0, 1) by its training-set quantiles.

    The knots are the quantiles at levels 0, 1/Q, ..., 1; a value between two knots is
    interpolated linearly, a value shared by several knots (a tie) gets the middle of their
    levels, values below the first knot give 0 and above the last just under 1.
    """

    def __init__(self, num_features: int, num_quantiles: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if num_quantiles < 1:
            raise ValueError(f"num_quantiles must be >= 1, got {num_quantiles}")
        self.num_features = num_features
        self.num_quantiles = num_quantiles
        self.knots = self.add_weight(name="knots", shape=(num_features, num_quantiles + 1), trainable=False,
                                     initializer=tf.constant_initializer(
                                         np.tile(np.linspace(0.0, 1.0, num_quantiles + 1), (num_features, 1))))

    def adapt(self, values: np.ndarray) -> None:
        """Sets the knots from training values [R, F] (non-finite values are an error)."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != self.num_features or values.shape[0] == 0:
            raise ValueError(f"QuantileNormalizer.adapt: expected [R > 0, {self.num_features}], got {values.shape}")
        if not np.isfinite(values).all():
            raise ValueError("QuantileNormalizer.adapt: the training values hold NaN or infinity")
        levels = np.linspace(0.0, 1.0, self.num_quantiles + 1)
        self.knots.assign(np.quantile(values, levels, axis=0).T.astype(np.float32))

    def call(self, values: tf.Tensor) -> tf.Tensor:
        """Args: values [..., F] float32. Returns: [..., F] in [0, 1)."""
        shape = tf.shape(values)
        flat = tf.transpose(tf.reshape(values, [-1, self.num_features]))
        level = 0.5 * (self._cdf(flat, "left") + self._cdf(flat, "right"))
        level = tf.clip_by_value(level, 0.0, _BELOW_ONE)
        return tf.reshape(tf.transpose(level), shape)

    def _cdf(self, flat: tf.Tensor, side: str) -> tf.Tensor:
        knots = tf.convert_to_tensor(self.knots)
        last = self.num_quantiles
        index = tf.searchsorted(knots, flat, side=side)
        lower_index = tf.clip_by_value(index - 1, 0, last)
        lower = tf.gather(knots, lower_index, batch_dims=1)
        upper = tf.gather(knots, tf.clip_by_value(index, 0, last), batch_dims=1)
        fraction = tf.clip_by_value((flat - lower) / tf.maximum(upper - lower, 1e-12), 0.0, 1.0)
        inner = (tf.cast(lower_index, tf.float32) + fraction) / float(last)
        return tf.where(index == 0, 0.0, tf.where(index > last, 1.0, inner))


class RankingFeatures(keras.layers.Layer):
    """The YouTube ranking features of each (user, candidate) pair, as one dense vector.

    `retrieval_scorer`, when given, is a layer mapping the signature inputs to [B, N]
    candidate-generator scores (see trainer.ranking.retrieval_feature); it is not trained here.
    """

    def __init__(self, space: ModelContext, embedding_dim: int, num_quantiles: int,
                 retrieval_scorer: keras.layers.Layer | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.space = space
        self.catalog = CatalogTables(space, name="catalog")
        self.retrieval_scorer = retrieval_scorer
        if retrieval_scorer is not None:
            retrieval_scorer.trainable = False
        self.continuous_names = tuple(continuous_feature_names(space, retrieval_scorer is not None))
        self.normalizer = QuantileNormalizer(len(self.continuous_names), num_quantiles, name="quantiles")
        # An unknown demographic value or age is a category of its own here (learnt rows), unlike unknown ids.
        self.demographics = {
            key: LookupEmbedding(space.vocab.field(vocab), embedding_dim, zero_unknown=False, name=f"{key}_embedding")
            for key, column, vocab in DEMOGRAPHICS if space.has(column)
        }
        self.age_bucket = AgeBucket(space.age_boundaries, name="age_bucket")
        self.age_embedding = (IdEmbedding(self.age_bucket.num_buckets, embedding_dim, zero_unknown=False,
                                          name="age_embedding") if space.has("age") else None)
        self.genre_embedding = (IdEmbedding(len(space.vocab.genres), embedding_dim, name="genre_embedding")
                                if self._use_genres else None)
        self.history_embedding = LookupEmbedding(space.vocab.item_ids, embedding_dim, name="watched_item_embedding")

    @property
    def _use_genres(self) -> bool:
        return self.space.has("genres") and len(self.space.vocab.genres) > 0

    def continuous(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The raw continuous features [B, N, F] (F = len(continuous_names)), before normalisation.

        Args:
            inputs: watch_history [B, H] str, candidate_ids [B, N] str, request_time [B] int64, the
                `context_inputs` (watch_history_times [B, H] int64, impression_history [B, I] str,
                language [B] str) and the user inputs the retrieval scorer reads.
        """
        return self._continuous(inputs, self.catalog(inputs[contract.CANDIDATE_IDS]))

    def _continuous(self, inputs: dict[str, tf.Tensor], candidate_rows: tf.Tensor) -> tf.Tensor:
        """`continuous` given the candidates' catalogue rows [B, N] int64."""
        history, candidates = inputs[contract.WATCH_HISTORY], inputs[contract.CANDIDATE_IDS]
        request_time = tf.cast(inputs[contract.REQUEST_TIME], tf.float64)
        columns: dict[str, tf.Tensor] = {}
        if self._use_genres:
            columns.update(self._genre_features(most_recent(self.catalog(history), self.space.history_length),
                                                candidate_rows))
        columns["example_age"] = tf.broadcast_to(self._example_age(request_time)[:, None], tf.shape(candidates))
        if self.space.has("release_time"):
            columns["item_age_days"] = self._item_age_days(request_time, candidate_rows)
        if self.space.has("channel"):
            columns.update(self._channel_features(inputs, request_time, candidate_rows))
        if self.space.has("impressions"):
            shown = self.catalog(inputs[contract.IMPRESSION_HISTORY])
            seen_before = (shown[:, None, :] == candidate_rows[:, :, None]) & (candidate_rows[:, :, None] > 1)
            columns["previous_impressions"] = tf.reduce_sum(tf.cast(seen_before, tf.float32), axis=-1)
        if self.space.has("language"):
            columns["language_match"] = self._language_match(inputs[contract.LANGUAGE], candidate_rows)
        if self.retrieval_scorer is not None:
            columns["retrieval_score"] = tf.cast(self.retrieval_scorer(inputs), tf.float32)
        return tf.stack([tf.cast(columns[name], tf.float32) for name in self.continuous_names], axis=-1)

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """Args: the signature inputs (candidate_ids [B, N]). Returns: [B, N, D] float32."""
        candidates = inputs[contract.CANDIDATE_IDS]
        num_candidates = tf.shape(candidates)[1]
        rows = self.catalog(candidates)  # one string lookup per request, shared by every candidate feature
        normalised = self.normalizer(self._continuous(inputs, rows))
        parts = [normalised, tf.square(normalised), tf.sqrt(normalised)]
        if self.space.has("release_time"):
            parts.append(tf.gather(self.catalog.release_known, rows)[..., None])
        user_parts = [embedding(inputs[key]) for key, embedding in self.demographics.items()]
        if self.age_embedding is not None:
            user_parts.append(self.age_embedding(self.age_bucket(inputs[contract.AGE])))
        watched = inputs[contract.WATCH_HISTORY]
        user_parts.append(self.history_embedding.history_mean(watched, self.space.history_length))
        user_vector = tf.concat(user_parts, axis=-1)
        parts.append(tf.tile(user_vector[:, None, :], [1, num_candidates, 1]))
        if self.genre_embedding is not None:
            parts.append(self.genre_embedding.mean(tf.gather(self.catalog.genre_codes, rows)))
        return tf.concat(parts, axis=-1)

    def adapt(self, inputs: dict[str, np.ndarray], batch_size: int = 1024) -> None:
        """Fits the quantile normaliser on training inputs (candidate_ids [R, C]: positives and negatives)."""
        rows = len(inputs[contract.CANDIDATE_IDS])
        chunks = [
            self.continuous({k: tf.constant(v[start:start + batch_size]) for k, v in inputs.items()}).numpy()
            for start in range(0, rows, batch_size)
        ]
        values = np.concatenate(chunks, axis=0)
        self.normalizer.adapt(values.reshape(-1, len(self.continuous_names)))

    def _genre_features(self, history_rows: tf.Tensor, candidate_rows: tf.Tensor) -> dict[str, tf.Tensor]:
        watched = tf.gather(self.catalog.genre_multi_hot, history_rows)  # [B, H, NG]
        counts = tf.reduce_sum(watched, axis=1)  # [B, NG]
        # Watches after each position, pads ("" = row 0) not counted: TF Serving's batching appends pads
        # after the most recent watch, so a position counted from the end of the row would shift.
        is_watch = tf.cast(history_rows > 0, tf.float32)
        positions_ago = tf.cumsum(is_watch, axis=1, exclusive=True, reverse=True)[:, :, None]  # [B, H, 1]
        since = tf.reduce_min(tf.where(watched > 0, positions_ago, NEVER_WATCHED), axis=1)  # [B, NG]
        since = tf.where(tf.shape(history_rows)[1] > 0, since, tf.fill(tf.shape(counts), NEVER_WATCHED))
        candidate_genres = tf.gather(self.catalog.genre_multi_hot, candidate_rows)  # [B, N, NG]
        has_genre = candidate_genres > 0
        watch_count = tf.reduce_max(tf.where(has_genre, counts[:, None, :], 0.0), axis=-1)
        positions_since = tf.reduce_min(tf.where(has_genre, since[:, None, :], NEVER_WATCHED), axis=-1)
        return {"genre_watch_count": watch_count, "genre_positions_since": positions_since}

    def _channel_features(self, inputs: dict[str, tf.Tensor], request_time: tf.Tensor, candidate_rows: tf.Tensor
                          ) -> dict[str, tf.Tensor]:
        history_rows = most_recent(self.catalog(inputs[contract.WATCH_HISTORY]), self.space.history_length)
        times = tf.cast(inputs[contract.WATCH_HISTORY_TIMES], tf.float64)
        # Times align with the history entry by entry; a request without them (a client that predates the
        # input sends one pad) leaves every time unknown.
        times = tf.cond(tf.equal(tf.shape(times)[1], tf.shape(history_rows)[1]), lambda: times,
                        lambda: tf.zeros(tf.shape(history_rows), tf.float64))
        watched = tf.gather(self.catalog.channel_codes, history_rows)  # [B, H]
        candidate = tf.gather(self.catalog.channel_codes, candidate_rows)  # [B, N]
        same = (watched[:, None, :] == candidate[:, :, None]) & (candidate[:, :, None] > 0)  # [B, N, H]
        count = tf.reduce_sum(tf.cast(same, tf.float32), axis=-1)
        timed = same & (times[:, None, :] > 0)
        last = tf.reduce_max(tf.where(timed, times[:, None, :], 0.0), axis=-1)
        known = tf.reduce_any(timed, axis=-1) & (request_time[:, None] > 0)
        since = tf.clip_by_value(request_time[:, None] - last, 0.0, float(NEVER_SECONDS))
        return {"channel_watch_count": count, "channel_seconds_since": tf.where(known, since, float(NEVER_SECONDS))}

    def _language_match(self, user_language: tf.Tensor, candidate_rows: tf.Tensor) -> tf.Tensor:
        item_language = tf.gather(self.catalog.languages, candidate_rows)  # [B, N]
        user = tf.broadcast_to(user_language[:, None], tf.shape(item_language))
        known = (item_language != "") & (user != "")
        return tf.where(known, tf.cast(tf.equal(item_language, user), tf.float32), 0.5)

    @property
    def context_inputs(self) -> tuple[str, ...]:
        """The ranking-only signature inputs these features read (contract.RANKING_CONTEXT_INPUTS)."""
        needed = {contract.WATCH_HISTORY_TIMES: self.space.has("channel"),
                  contract.IMPRESSION_HISTORY: self.space.has("impressions"),
                  contract.LANGUAGE: self.space.has("language")}
        return tuple(name for name, used in needed.items() if used)

    def _example_age(self, request_time: tf.Tensor) -> tf.Tensor:
        age = tf.clip_by_value((float(self.space.t_max) - request_time) / float(self.space.t_span), 0.0, 1.0)
        return tf.where(request_time > 0, age, 0.0)

    def _item_age_days(self, request_time: tf.Tensor, candidate_rows: tf.Tensor) -> tf.Tensor:
        reference = tf.where(request_time > 0, request_time, float(self.space.t_max)) / SECONDS_PER_DAY
        release = tf.cast(tf.gather(self.catalog.release_days, candidate_rows), tf.float64)
        known = tf.gather(self.catalog.release_known, candidate_rows) > 0
        return tf.where(known, tf.maximum(reference[:, None] - release, 0.0), 0.0)


def continuous_feature_names(space: ModelContext, with_retrieval_score: bool) -> list[str]:
    """The continuous features a model over `space` computes, in order."""
    names = list(GENRE_FEATURES) if space.has("genres") and space.vocab.genres else []
    names.append("example_age")
    if space.has("release_time"):
        names.append("item_age_days")
    if space.has("channel"):
        names.extend(CHANNEL_FEATURES)
    if space.has("impressions"):
        names.append("previous_impressions")
    if space.has("language"):
        names.append("language_match")
    if with_retrieval_score:
        names.append("retrieval_score")
    return names


def _with_reserved_rows(values: np.ndarray) -> np.ndarray:
    """Prepends the rows of the padding id and of an id outside the catalogue (zeros)."""
    reserved = np.zeros((NUM_RESERVED,) + values.shape[1:], dtype=values.dtype)
    return np.concatenate([reserved, values], axis=0)


def _genre_tables(genres: np.ndarray, genre_vocabulary: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Genre codes [M + 2, G] (0 pad, 1 unknown genre, index + 2) and multi-hot [M + 2, NG] over known genres."""
    genres = np.asarray(genres, dtype=object).reshape(len(genres), -1)
    index = pd.Index(list(genre_vocabulary)).get_indexer(genres.ravel()).reshape(genres.shape)
    empty = genres == ""
    codes = np.where(empty, 0, np.where(index < 0, OOV_INDEX, index + NUM_RESERVED)).astype(np.int64)
    multi_hot = np.zeros((len(genres), max(len(genre_vocabulary), 1)), dtype=np.float32)
    rows, columns = np.nonzero((index >= 0) & ~empty)
    multi_hot[rows, index[rows, columns]] = 1.0
    if codes.shape[1] == 0:
        codes = np.zeros((len(genres), 1), dtype=np.int64)
    return _with_reserved_rows(codes), _with_reserved_rows(multi_hot)
