"""bench.synthetic_models: the exported models compute what the formula of their docstring gives in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bench import synthetic_models
from recsys_common import contract
from trainer.export import layout

HISTORIES = [[], ["i3", "i7", "unknown"], ["i50"]]
USER_IDS = ["a", "b", "c"]


def _reference_scores(catalog: synthetic_models.SyntheticCatalog, ranking_scale: float = 1.0
                      ) -> tuple[np.ndarray, np.ndarray]:
    """u = U[hash(user) mod 1000] + mean(E[known watched]); (u . E over all items, scale * the same)."""
    index = {item: row for row, item in enumerate(catalog.item_ids)}
    buckets = tf.strings.to_hash_bucket_fast(USER_IDS, 1000).numpy()
    vectors = catalog.user_embeddings[buckets].astype(np.float64)
    for row, history in enumerate(HISTORIES):
        known = [index[item] for item in history if item in index]
        if known:
            vectors[row] += catalog.item_embeddings[known].astype(np.float64).mean(axis=0)
    dots = vectors @ catalog.item_embeddings.astype(np.float64).T
    return dots, ranking_scale * dots


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    catalog = synthetic_models.make_catalog(120, dim=6, seed=1)
    base = tmp_path_factory.mktemp("saved_models")
    models = (contract.RETRIEVAL_BRUTEFORCE, contract.RETRIEVAL, contract.RANKING)
    return catalog, synthetic_models.export_synthetic_models(base, catalog, models, k=15, ranking_scale=0.5)


def _features(**extra):
    width = max(len(h) for h in HISTORIES) + 1
    history = [[""] * (width - len(h)) + h for h in HISTORIES]
    features = {spec.name: tf.constant([0] * 3, tf.int64) if spec.dtype == "int64" else tf.constant([""] * 3)
                for spec in contract.USER_INPUTS}
    features.update(user_id=tf.constant(USER_IDS), watch_history=tf.constant(history),
                    search_history=tf.constant([[""]] * 3), **extra)
    return features


@pytest.mark.parametrize("model", [contract.RETRIEVAL_BRUTEFORCE, contract.RETRIEVAL])
def test_retrieval_returns_the_exact_top_k(exported, model):
    catalog, paths = exported
    outputs = tf.saved_model.load(str(paths[model])).signatures[contract.SIGNATURE_NAME](**_features())
    dots, _ = _reference_scores(catalog)
    top = np.argsort(-dots, axis=1, kind="stable")[:, :15]
    np.testing.assert_allclose(outputs[contract.SCORES].numpy(), np.take_along_axis(dots, top, 1), rtol=1e-4,
                               atol=1e-5)
    assert [[item.decode() for item in row] for row in outputs[contract.ITEM_IDS].numpy()] == \
        catalog.item_ids[top].tolist()


def test_ranking_scores_candidates_and_pads(exported):
    catalog, paths = exported
    candidates = [["i1", "i2", ""], ["i9", "nope", "i3"], ["", "", "i119"]]
    outputs = tf.saved_model.load(str(paths[contract.RANKING])).signatures[contract.SIGNATURE_NAME](
        **_features(candidate_ids=tf.constant(candidates)))
    _, logits = _reference_scores(catalog, ranking_scale=0.5)
    index = {item: row for row, item in enumerate(catalog.item_ids)}
    expected = np.array([[logits[b, index[c]] if c in index else -20.0 for c in row]
                         for b, row in enumerate(candidates)], dtype=np.float32)
    np.testing.assert_allclose(outputs[contract.EXPECTED_WATCH_TIME].numpy(), np.exp(expected), rtol=1e-4)
    np.testing.assert_allclose(outputs[contract.SCORES].numpy(), 1 / (1 + np.exp(-expected)), rtol=1e-4)


def test_each_export_carries_metadata_and_warmup(exported):
    catalog, paths = exported
    for name, version_dir in paths.items():
        metadata = layout.read_metadata(version_dir)
        assert metadata[contract.METADATA_ITEM_TITLES]["i5"] == catalog.titles["i5"]
        expected_inputs = contract.ranking_inputs() if name == contract.RANKING else contract.RETRIEVAL_INPUTS
        assert list(metadata[contract.METADATA_INPUTS]) == [spec.name for spec in expected_inputs]
        (warmup,) = layout.read_warmup_requests(version_dir)
        assert set(warmup.predict_log.request.inputs) == {spec.name for spec in expected_inputs}
        assert warmup.predict_log.request.model_spec.name == name
