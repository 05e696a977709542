"""The layers both stages build their models from.

Every categorical input goes through one encoding: `string_lookup` maps "" to 0 (padding), a value outside
the training vocabulary to 1 (OOV) and vocabulary[i] to i + 2, as `Vocabularies.lookup` does in NumPy;
`AgeBucket` gives ages indices in the same layout. `IdEmbedding` embeds such indices with zero vectors for
padding and OOV (an unknown id carries no signal), `masked_mean` / `IdEmbedding.mean` average a list of them
leaving padding and OOV out, and `most_recent` cuts a history to the training window.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf
import tf_keras as keras

from trainer.data.vocab import NUM_RESERVED, OOV_INDEX


def string_lookup(vocabulary: Sequence[str]) -> keras.layers.StringLookup:
    """"" -> 0 (padding), out of vocabulary -> 1 (OOV), vocabulary[i] -> i + 2 (as `Vocabularies.lookup`)."""
    return keras.layers.StringLookup(vocabulary=list(vocabulary), mask_token="", num_oov_indices=1)


def most_recent(indices: tf.Tensor, length: int | None) -> tf.Tensor:
    """Keeps the `length` most recent entries of each history row and turns older ones into padding.

    The models are trained on examples holding the last `length` watches; a serving request may carry the
    user's whole history (retrieval drops all of it from its answer), so the towers read the same window at
    both times. Padding may sit anywhere in a row (TF Serving's batching appends it after the newest watch):
    recency is counted in entries, not positions.

    Args:
        indices: [B, L] int lookup indices, most recent last, 0 = padding.
        length: entries to keep per row; None keeps every entry.

    Returns:
        [B, L] like `indices`, 0 where an entry is older than the `length` most recent ones.
    """
    if length is None:
        return indices
    is_entry = tf.cast(indices > 0, tf.int32)
    newer_entries = tf.cumsum(is_entry, axis=1, exclusive=True, reverse=True)
    return tf.where(newer_entries < length, indices, tf.zeros_like(indices))


def masked_mean(vectors: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
    """Mean over the second-to-last axis of the known entries (index > 1); zeros for a list without any.

    Args:
        vectors: [..., L, D] the entries' vectors.
        indices: [..., L] their lookup indices (0 padding, 1 OOV).

    Returns:
        [..., D].
    """
    known = tf.cast(indices > OOV_INDEX, vectors.dtype)[..., tf.newaxis]
    count = tf.reduce_sum(known, axis=-2)
    return tf.reduce_sum(vectors * known, axis=-2) / tf.maximum(count, 1.0)


class IdEmbedding(keras.layers.Layer):
    """An embedding of lookup indices whose padding (0) and out-of-vocabulary (1) rows are zero.

    Args:
        vocabulary_size: values in the vocabulary; the table has vocabulary_size + 2 rows.
        dim: the embedding width.
        l2: L2 regularisation of the table (0 = none).
        initializer: of the table (a Keras initializer or its name).
        zero_unknown: False gives indices 0 and 1 learnt rows of their own (e.g. "age unknown" as a category).
    """

    def __init__(self, vocabulary_size: int, dim: int, l2: float = 0.0, initializer: Any = "uniform",
                 zero_unknown: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.zero_unknown = zero_unknown
        self.embedding = keras.layers.Embedding(
            vocabulary_size + NUM_RESERVED, dim, embeddings_initializer=initializer,
            embeddings_regularizer=keras.regularizers.l2(l2) if l2 > 0 else None, name="embedding")

    def call(self, indices: tf.Tensor) -> tf.Tensor:
        """Args: indices [...] int64 lookup indices. Returns: [..., dim], zero where indices < 2 (zero_unknown)."""
        vectors = self.embedding(indices)
        if not self.zero_unknown:
            return vectors
        return vectors * tf.cast(indices > OOV_INDEX, vectors.dtype)[..., tf.newaxis]

    def mean(self, indices: tf.Tensor) -> tf.Tensor:
        """The masked mean of the embeddings of a list of indices [..., L] -> [..., dim] (see `masked_mean`)."""
        return masked_mean(self(indices), indices)


class LookupEmbedding(keras.layers.Layer):
    """String ids -> embeddings over a fixed vocabulary: `string_lookup` then `IdEmbedding`.

    Args:
        vocabulary: the known ids (no "").
        dim, **options: as `IdEmbedding` (l2, initializer, zero_unknown, name).
    """

    def __init__(self, vocabulary: Sequence[str], dim: int, l2: float = 0.0, initializer: Any = "uniform",
                 zero_unknown: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.lookup = string_lookup(vocabulary)
        self.embedding = IdEmbedding(len(vocabulary), dim, l2, initializer, zero_unknown)

    def call(self, ids: tf.Tensor) -> tf.Tensor:
        """Args: ids [...] string. Returns: [..., dim]."""
        return self.embedding(self.lookup(ids))

    def history_mean(self, ids: tf.Tensor, length: int | None = None) -> tf.Tensor:
        """The masked mean over the `length` most recent known ids of each row.

        Args:
            ids: [B, L] string, most recent last, "" pads (anywhere in the row).
            length: entries read per row (`most_recent`); None = all.

        Returns:
            [B, dim]; zeros for a row without a known id.
        """
        return self.embedding.mean(most_recent(self.lookup(ids), length))


class AgeBucket(keras.layers.Layer):
    """Age -> bucket index in the lookup layout: 0 for an unknown age (<= 0), else 2 + the bucket.

    The bucket of a known age is the number of boundaries <= age (a value on a boundary opens the next
    bucket), so indices run 2 .. len(boundaries) + 2 and 1 is never used; an `IdEmbedding(num_buckets, d)`
    embeds them.

    Args:
        boundaries: ascending bucket edges (years, or the dataset's age codes).
    """

    def __init__(self, boundaries: Sequence[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.boundaries = [float(b) for b in boundaries]
        if any(b >= c for b, c in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"AgeBucket: boundaries must be strictly ascending, got {self.boundaries}")

    @property
    def num_buckets(self) -> int:
        """Buckets of known ages (the vocabulary size of the age's embedding)."""
        return len(self.boundaries) + 1

    def call(self, age: tf.Tensor) -> tf.Tensor:
        """Args: age [...] int or float. Returns: [...] int64 bucket indices."""
        age = tf.cast(age, tf.float64)
        bucket = tf.cast(tf.raw_ops.Bucketize(input=age, boundaries=self.boundaries), tf.int64) + NUM_RESERVED
        return tf.where(age > 0, bucket, tf.zeros_like(bucket))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "boundaries": self.boundaries}
