"""trainer.layers.most_recent, and the towers reading only the training window of a long history."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.retrieval.test_model import AGE_BOUNDARIES, ALL_FEATURES, CATALOG, T_MAX, VOCAB, requests
from trainer.config import RetrievalConfig
from trainer.layers import most_recent
from trainer.retrieval.model import ModelContext, RetrievalModel


def _expected(indices: np.ndarray, length: int) -> np.ndarray:
    """Row by row: keep the last `length` non-zero entries, zero the older ones."""
    out = np.zeros_like(indices)
    for row, values in enumerate(indices):
        positions = np.flatnonzero(values)[::-1][:length]
        out[row, positions] = values[positions]
    return out


@pytest.mark.parametrize("length", [0, 1, 2, 3, 10])
def test_most_recent_keeps_the_newest_entries_wherever_the_padding_sits(length: int) -> None:
    indices = np.array([[5, 6, 7, 8], [0, 0, 4, 9], [3, 0, 0, 0], [0, 0, 0, 0], [2, 0, 7, 0]], dtype=np.int64)
    np.testing.assert_array_equal(most_recent(tf.constant(indices), length).numpy(), _expected(indices, length))


def test_most_recent_without_a_length_keeps_everything() -> None:
    indices = tf.constant([[1, 0, 3]], tf.int64)
    assert most_recent(indices, None) is indices


def test_the_query_tower_reads_only_the_training_window_of_a_long_history() -> None:
    model = RetrievalModel(RetrievalConfig(embedding_dim=8, tower_layers=[16, 8]),
                           ModelContext(ALL_FEATURES, VOCAB, CATALOG, T_MAX, AGE_BOUNDARIES, history_length=2))
    long = requests(watch_history=np.array([["i1", "i3", "i2", "i1"], ["i3", "i3", "i2", ""]], dtype=object))
    window = requests(watch_history=np.array([["i2", "i1"], ["i3", "i2"]], dtype=object))
    older_differ = requests(watch_history=np.array([["i3", "i3", "i2", "i1"], ["i1", "i3", "i2", ""]], dtype=object))

    def embed(features: dict[str, np.ndarray]) -> np.ndarray:
        tensors = {k: tf.constant(v.astype(str) if v.dtype == object else v) for k, v in features.items()}
        return model.query_tower(tensors).numpy()

    np.testing.assert_allclose(embed(long), embed(window), rtol=1e-6)
    np.testing.assert_allclose(embed(older_differ), embed(window), rtol=1e-6)
    assert not np.allclose(embed(requests(watch_history=np.array([["i3", ""], ["i1", ""]], dtype=object))),
                           embed(window))
