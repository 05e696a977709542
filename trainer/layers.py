"""Tensor operations both stages share."""

from __future__ import annotations

import tensorflow as tf


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
