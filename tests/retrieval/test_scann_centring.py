"""Centred ScaNN indexes: the items minus their mean are indexed, q·mean is added back to the scores."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from trainer.retrieval.scann_index import ScannLayer, ScannParams, build_searcher, centred, item_centre
from trainer.retrieval.scann_tuning import exact_top_k, recall_against, tune_scann

K = 20


def shared_mean_corpus(seed: int, count: int = 4000, dim: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Items [count, dim] around a large common mean (norm ~40, spread ~1) and queries [64, dim]."""
    rng = np.random.default_rng(seed)
    mean = 10.0 * rng.normal(size=dim)
    items = mean + rng.normal(size=(count, dim)) * rng.uniform(0.2, 1.5, size=dim)
    queries = 0.1 * mean + rng.normal(size=(64, dim))
    return items.astype(np.float32), queries.astype(np.float32)


def test_centred_layer_returns_the_exact_dot_products_of_the_items_it_returns():
    items, queries = shared_mean_corpus(1)
    mean = items.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(item_centre(items), mean, rtol=1e-5)
    params = ScannParams(False, num_leaves=63, num_leaves_to_search=16, reorder=4 * K)
    layer = ScannLayer(params, K, centre=item_centre(items))
    layer.index(tf.constant(items), tf.constant(np.arange(len(items))))
    scores, ids = (t.numpy() for t in layer(queries))
    expected = np.einsum("qd,qkd->qk", queries.astype(np.float64), items[ids].astype(np.float64))
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-3)  # not x - mean: q·x itself
    assert np.all(np.diff(scores, axis=1) <= 1e-3)  # best first
    assert recall_against(ids, exact_top_k(queries, items, K)) >= 0.8
    assert [w.name for w in layer.non_trainable_weights if "item_centre" in w.name]
    assert not [w for w in layer.trainable_weights if "item_centre" in w.name]


def test_centred_and_uncentred_searchers_rank_by_the_same_dot_products():
    items, queries = shared_mean_corpus(2)
    mean = item_centre(items)
    params = ScannParams(brute_force=True)
    plain = build_searcher(items, params, K).search_batched(queries, final_num_neighbors=K)
    shifted = build_searcher(centred(items, mean), params, K).search_batched(queries, final_num_neighbors=K)
    np.testing.assert_array_equal(shifted.indices.numpy(), plain.indices.numpy())
    np.testing.assert_allclose(shifted.distances.numpy() + (queries @ mean)[:, None], plain.distances.numpy(),
                               rtol=1e-4, atol=1e-3)


def test_tuning_sweeps_both_variants_and_serves_the_one_it_measured():
    items, queries = shared_mean_corpus(3, count=6000)
    queries = np.concatenate([queries, shared_mean_corpus(4, count=10)[1]])
    tuning = tune_scann(items, queries, K, target_recall=0.9, brute_force_below=1000)
    assert not tuning.params.brute_force
    assert {row["centred"] for row in tuning.sweep} == {False, True}
    assert len(tuning.sweep) == 2 * len({(r["params"]["num_leaves_to_search"], r["params"]["reorder"])
                                         for r in tuning.sweep})
    assert tuning.to_json()["centred"] == (tuning.centre is not None)
    # The recorded recall is that of the exported layer (its searcher + the centre) against NumPy brute force.
    check = queries[1::2]
    layer = ScannLayer(tuning.params, K, searcher=tuning.searcher, centre=tuning.centre)
    layer.index(tf.constant(items), tf.constant(np.arange(len(items))))
    scores, ids = (t.numpy() for t in layer(check))
    assert recall_against(ids, exact_top_k(check, items, K)) == tuning.recall >= 0.9
    np.testing.assert_allclose(scores, np.einsum("qd,qkd->qk", check, items[ids]), rtol=1e-4, atol=1e-3)
