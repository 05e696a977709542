"""A tree that leaves a heavy user short of K unseen items: the served rows are searched again over every leaf."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tf_keras as keras
from scann.scann_ops.py import scann_ops

from recsys_common import contract
from trainer.retrieval.export import RetrievalServingModule, default_request
from trainer.retrieval.scann_index import ScannLayer, ScannParams

K = 5
QUERY = np.array([1.0, 0.3], np.float32)


class FixedQuery(keras.layers.Layer):
    """Every request's query embedding is QUERY."""

    def call(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        return tf.tile(tf.constant(QUERY[None]), [tf.shape(features[contract.USER_ID])[0], 1])


def clusters() -> tuple[np.ndarray, np.ndarray]:
    """Four far-apart clusters, nearest the query first: a (10 items), b (1), c (1), d (10)."""
    rng = np.random.default_rng(0)
    centres, sizes = [(10, 0), (0, 10), (0, -10), (-10, 0)], [10, 1, 1, 10]
    embeddings = np.concatenate([np.asarray(centre, np.float32) + 0.01 * rng.standard_normal((size, 2)).astype(
        np.float32) for centre, size in zip(centres, sizes, strict=True)])
    ids = np.array([f"{name}{i}" for name, size in zip("abcd", sizes, strict=True) for i in range(size)])
    return embeddings, ids


def cluster_index(leaves_to_search: int) -> ScannLayer:
    """A ScannLayer over `clusters()` with one leaf per cluster, searching `leaves_to_search` of the 4."""
    embeddings, ids = clusters()
    params = ScannParams(brute_force=False, num_leaves=4, num_leaves_to_search=leaves_to_search, reorder=22,
                         dimensions_per_block=1)
    # partitions of one item allowed, k-means++ initialised (the default would merge b and c)
    searcher = scann_ops.builder(embeddings, K, "dot_product").tree(
        num_leaves=4, num_leaves_to_search=leaves_to_search, training_sample_size=len(ids), min_partition_size=1,
        random_init=False).score_ah(1, anisotropic_quantization_threshold=0.2).reorder(22).build()
    index = ScannLayer(params, K, searcher=searcher)
    index.index(tf.constant(embeddings), tf.constant(ids))
    return index


def assert_serves_the_exact_unseen_top_k(module: RetrievalServingModule, history: np.ndarray) -> None:
    """The module's answer to one request with `history` [1, H] equals NumPy's exact unseen top K."""
    embeddings, ids = clusters()
    served = module.serve({name: tf.constant(values) for name, values in
                           {**default_request(1), contract.WATCH_HISTORY: history}.items()})
    exact = embeddings @ QUERY
    order = [row for row in np.argsort(-exact, kind="stable") if ids[row] not in set(history[0])][:K]
    np.testing.assert_array_equal(served[contract.ITEM_IDS].numpy()[0].astype(str), ids[order])
    np.testing.assert_allclose(served[contract.SCORES].numpy()[0], exact[order], rtol=1e-4)


def test_a_user_whose_history_fills_the_nearest_leaves_still_gets_the_exact_unseen_top_k():
    index = cluster_index(leaves_to_search=1)
    history = np.array([[f"a{i}" for i in range(10)]])
    width = K + history.shape[1]
    _, searched = index(tf.constant(QUERY[None]), k=width)
    unseen = [item for item in searched.numpy()[0].astype(str) if item not in set(history[0])]
    assert len(unseen) < K  # the leaves the tree searches hold fewer than K items outside the history

    module = RetrievalServingModule(FixedQuery(), index, K, len(clusters()[1]))
    assert module.searches_again
    assert_serves_the_exact_unseen_top_k(module, history)


def test_a_tree_whose_searches_always_fill_serves_the_exact_unseen_top_k_without_a_second_search():
    module = RetrievalServingModule(FixedQuery(), cluster_index(leaves_to_search=4), K, len(clusters()[1]))
    assert not module.searches_again  # every leaf is searched: nothing can come back short
    assert_serves_the_exact_unseen_top_k(module, np.array([[f"a{i}" for i in range(10)] + ["b0", ""]]))
