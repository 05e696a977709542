"""The layers both stages share (trainer.layers) against NumPy, and the towers reading only the training window."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from tests.retrieval.test_model import ALL_FEATURES, CONTEXT, requests
from trainer.config import RankingConfig, RetrievalConfig
from trainer.layers import AgeBucket, IdEmbedding, LookupEmbedding, masked_mean, most_recent, string_lookup
from trainer.ranking.models import build_model
from trainer.retrieval.model import RetrievalModel


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
                           dataclasses.replace(CONTEXT, history_length=2), ALL_FEATURES)
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


def _numpy_masked_mean(vectors: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Entry by entry over the last list axis: the mean of the vectors whose index is >= 2, else zeros."""
    flat_vectors = vectors.reshape(-1, *vectors.shape[-2:])
    flat_indices = indices.reshape(-1, indices.shape[-1])
    out = np.zeros((len(flat_vectors), vectors.shape[-1]), np.float64)
    for row, (rows, codes) in enumerate(zip(flat_vectors, flat_indices)):
        known = [vector for vector, code in zip(rows, codes) if code >= 2]
        if known:
            out[row] = np.mean(known, axis=0)
    return out.reshape(*vectors.shape[:-2], vectors.shape[-1])


@pytest.mark.parametrize("shape", [(4, 5), (3, 2, 4)])
def test_masked_mean_leaves_out_padding_and_unknown_entries(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(*shape, 3)).astype(np.float32)
    indices = rng.integers(0, 5, size=shape)
    indices.reshape(-1, shape[-1])[0] = 1  # a row of OOV entries only: zeros, not a mean of the OOV vectors
    indices.reshape(-1, shape[-1])[1] = 0  # a row of padding only
    got = masked_mean(tf.constant(vectors), tf.constant(indices)).numpy()
    np.testing.assert_allclose(got, _numpy_masked_mean(vectors, indices), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.reshape(-1, 3)[:2], np.zeros((2, 3)))


def test_masked_mean_of_an_empty_list_is_zero() -> None:
    got = masked_mean(tf.zeros([2, 0, 3]), tf.zeros([2, 0], tf.int64)).numpy()
    np.testing.assert_array_equal(got, np.zeros((2, 3)))


def test_id_embedding_gives_unknown_and_padding_zero_vectors() -> None:
    layer = IdEmbedding(vocabulary_size=3, dim=2)
    layer(tf.constant([0]))
    table = np.arange(10, dtype=np.float32).reshape(5, 2) + 1.0  # no zero row of its own
    layer.set_weights([table])
    indices = np.array([[0, 1, 2], [4, 3, 0]])
    expected = np.where((indices >= 2)[..., None], table[indices], 0.0)
    np.testing.assert_array_equal(layer(tf.constant(indices)).numpy(), expected)
    # the mean: user 1 -> row 2 alone; user 2 -> rows 4 and 3
    np.testing.assert_array_equal(layer.mean(tf.constant(indices)).numpy(), [table[2], (table[4] + table[3]) / 2])


def test_id_embedding_can_learn_the_unknown_rows() -> None:
    layer = IdEmbedding(vocabulary_size=1, dim=2, zero_unknown=False)
    layer(tf.constant([0]))
    table = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    layer.set_weights([table])
    np.testing.assert_array_equal(layer(tf.constant([0, 1, 2])).numpy(), table)


def test_id_embedding_l2_regularises_the_table() -> None:
    layer = IdEmbedding(vocabulary_size=2, dim=2, l2=0.5)
    layer(tf.constant([2]))
    table = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    layer.set_weights([table])
    assert float(tf.add_n(layer.losses)) == pytest.approx(0.5 * float((table ** 2).sum()))


def test_string_lookup_reserves_padding_and_oov() -> None:
    got = string_lookup(["b", "a"])(tf.constant(["", "a", "b", "zz"])).numpy()
    np.testing.assert_array_equal(got, [0, 3, 2, 1])


def test_lookup_embedding_of_ids_and_of_the_recent_history() -> None:
    layer = LookupEmbedding(["i1", "i2", "i3"], dim=2)
    layer(tf.constant(["i1"]))
    table = np.arange(10, dtype=np.float32).reshape(5, 2) + 1.0
    layer.set_weights([table])
    np.testing.assert_array_equal(layer(tf.constant(["i3", "", "zz"])).numpy(), [table[4], [0, 0], [0, 0]])
    history = tf.constant([["i1", "zz", "i2", "i3"], ["i2", "", "", ""], ["", "zz", "", ""]])
    # every entry: i1 i2 i3 -> rows 2 3 4 (zz left out); the two most recent entries of row 1: i2 i3 -> rows 3 4
    np.testing.assert_allclose(layer.history_mean(history).numpy(),
                               [table[2:5].mean(axis=0), table[3], [0, 0]], rtol=1e-6)
    np.testing.assert_allclose(layer.history_mean(history, length=2).numpy(),
                               [(table[3] + table[4]) / 2, table[3], [0, 0]], rtol=1e-6)


def test_age_buckets_by_hand() -> None:
    bucket = AgeBucket([18, 25, 35])
    ages = np.array([-7, 0, 1, 17, 18, 24, 25, 34, 35, 99])
    # 0 = unknown (age <= 0); a value on a boundary opens the next bucket; known buckets start at 2
    np.testing.assert_array_equal(bucket(tf.constant(ages)).numpy(), [0, 0, 2, 2, 3, 3, 4, 4, 5, 5])
    np.testing.assert_array_equal(bucket(tf.constant(ages.astype(np.float32))).numpy(),
                                  bucket(tf.constant(ages)).numpy())
    assert bucket.num_buckets == 4


def test_age_buckets_match_numpy_for_fractional_boundaries_and_any_shape() -> None:
    boundaries = [1.0, 17.5, 18.0, 56.0]
    ages = np.array([[0, 1, 17], [18, 56, -1]], dtype=np.int64)
    expected = np.where(ages > 0, np.searchsorted(boundaries, ages, side="right") + 2, 0)
    np.testing.assert_array_equal(AgeBucket(boundaries)(tf.constant(ages)).numpy(), expected)


def test_age_boundaries_out_of_order_are_an_error() -> None:
    with pytest.raises(ValueError, match="strictly ascending"):
        AgeBucket([18, 18, 25])


def test_both_stages_encode_age_alike() -> None:
    retrieval = RetrievalModel(RetrievalConfig(embedding_dim=4, tower_layers=[4]), CONTEXT, ALL_FEATURES)
    ranking = build_model("full", dataclasses.replace(CONTEXT, available=frozenset({"age"})),
                          RankingConfig(embedding_dim=4, mlp_layers=[8, 4], feature_embedding_dim=3, num_quantiles=5))
    features = ranking.features
    assert features is not None
    ages = tf.constant([-2, 0, 1, 18, 30, 90], tf.int64)
    np.testing.assert_array_equal(features.age_bucket(ages).numpy(), retrieval.query_tower.age_bucket(ages).numpy())
