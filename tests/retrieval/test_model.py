"""The two towers on hand-made inputs: masking of unknown values, feature switches, static item tables."""

from __future__ import annotations

import numpy as np
import pytest

from trainer.config import ConfigError, RetrievalConfig, load_config
from trainer.context import ModelContext
from trainer.data.catalog import ItemCatalog
from trainer.data.vocab import Vocabularies
from trainer.layers import masked_mean
from trainer.retrieval.features import FeatureSet, dropped_features
from trainer.retrieval.model import RetrievalModel, embed_items, embed_queries

VOCAB = Vocabularies(
    user_ids=("u1", "u2"), item_ids=("i1", "i2", "i3"), genders=("F", "M"), occupations=("writer",),
    regions=("r1", "r2"), genres=("drama", "music"), title_tokens=("red", "blue"), query_tokens=("jazz", "news"),
)
CATALOG = ItemCatalog(
    item_ids=np.array(["i1", "i2", "i3", "cold_a", "cold_b", "cold_c"], dtype=object),
    genres=np.array([["drama", ""], ["music", "drama"], ["", ""], ["music", ""], ["music", ""], ["drama", ""]],
                    dtype=object),
    title_tokens=np.array([["red"], ["blue"], ["red"], ["blue"], ["blue"], ["red"]], dtype=object),
    release_time=np.array([86_400, 0, 5 * 86_400, 9 * 86_400, 9 * 86_400, 9 * 86_400], dtype=np.int64),
    titles=np.array(["Red", "Blue", "Red", "Blue", "Blue", "Red"], dtype=object),
)
T_MAX = 10 * 86_400
AGE_BOUNDARIES = (1, 18, 25, 35)
CONTEXT = ModelContext.build(VOCAB, CATALOG, T_MAX, T_MAX, age_boundaries=AGE_BOUNDARIES)


ALL_FEATURES = FeatureSet()


def make_model(features: FeatureSet = ALL_FEATURES, **config: object) -> RetrievalModel:
    return RetrievalModel(RetrievalConfig(embedding_dim=8, tower_layers=[16, 8], **config),  # type: ignore[arg-type]
                          CONTEXT, features)


def requests(**changes: object) -> dict[str, np.ndarray]:
    """Two requests of known users; `changes` replace whole inputs."""
    base = {
        "user_id": np.array(["u1", "u2"], dtype=object),
        "watch_history": np.array([["", "i1", "i2"], ["i3", "i2", "i1"]], dtype=object),
        "search_history": np.array([["jazz", ""], ["news", "jazz"]], dtype=object),
        "gender": np.array(["F", "M"], dtype=object),
        "occupation": np.array(["writer", ""], dtype=object),
        "region": np.array(["r1", "r2"], dtype=object),
        "age": np.array([30, 0], dtype=np.int64),
        "request_time": np.array([0, 0], dtype=np.int64),
    }
    base.update(changes)  # type: ignore[arg-type]
    return base


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    return make_model()


def test_masked_mean_averages_known_entries_only():
    vectors = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    indices = np.array([[0, 2, 5], [1, 0, 0]])  # padding, known, known | OOV, padding, padding
    expected = np.stack([vectors[0, 1:].mean(axis=0), np.zeros(4, np.float32)])
    np.testing.assert_allclose(masked_mean(vectors, indices).numpy(), expected)


@pytest.mark.parametrize("name, unknown, blank", [
    ("user_id", np.array(["stranger", "u2"], dtype=object), np.array(["", "u2"], dtype=object)),
    ("watch_history", np.array([["zz", "i1", "i2"], ["i3", "yy", "i1"]], dtype=object),
     np.array([["", "i1", "i2"], ["i3", "", "i1"]], dtype=object)),
    ("search_history", np.array([["jazz", "qq"], ["qq", "jazz"]], dtype=object),
     np.array([["jazz", ""], ["", "jazz"]], dtype=object)),
    ("gender", np.array(["X", "M"], dtype=object), np.array(["", "M"], dtype=object)),
    ("region", np.array(["r1", "r9"], dtype=object), np.array(["r1", ""], dtype=object)),
])
def test_unknown_values_act_as_missing(model, name, unknown, blank):
    with_unknown = embed_queries(model.query_tower, requests(**{name: unknown}))
    with_blank = embed_queries(model.query_tower, requests(**{name: blank}))
    np.testing.assert_allclose(with_unknown, with_blank, atol=1e-6)
    assert not np.allclose(with_blank, embed_queries(model.query_tower, requests()), atol=1e-6)


@pytest.mark.parametrize("width", [0, 1, 7])
def test_empty_histories_of_any_width_are_served_alike(model, width):
    empty = {"watch_history": np.full((2, width), "", dtype=object),
             "search_history": np.full((2, width), "", dtype=object)}
    padded = {"watch_history": np.full((2, 3), "", dtype=object), "search_history": np.full((2, 2), "", dtype=object)}
    result = embed_queries(model.query_tower, requests(**empty))
    assert result.shape == (2, 8) and np.isfinite(result).all()
    np.testing.assert_allclose(result, embed_queries(model.query_tower, requests(**padded)), atol=1e-6)


def test_example_age_defaults_to_zero_the_serving_value(model):
    absent = embed_queries(model.query_tower, requests())
    zero = embed_queries(model.query_tower, requests(example_age=np.zeros(2, np.float32)))
    old = embed_queries(model.query_tower, requests(example_age=np.ones(2, np.float32)))
    np.testing.assert_allclose(absent, zero, atol=1e-6)
    assert not np.allclose(absent, old, atol=1e-6)


def test_age_buckets_group_ages_and_zero_is_unknown(model):
    tower = model.query_tower
    buckets = tower.age_bucket(np.array([0, -3, 1, 17, 18, 24, 60], dtype=np.int64)).numpy()
    np.testing.assert_array_equal(buckets, [0, 0, 3, 3, 4, 4, 6])


def test_candidate_tower_reads_item_features_from_the_catalogue(model):
    embeddings = embed_items(model.candidate_tower, CATALOG.item_ids)
    # cold_a and cold_b: unknown ids with equal genres, title and age; cold_c differs in genre and title.
    np.testing.assert_allclose(embeddings[3], embeddings[4], atol=1e-6)
    assert not np.allclose(embeddings[3], embeddings[5], atol=1e-4)
    ids_only = make_model(FeatureSet(item_genres=False, item_title=False, item_age=False))
    cold = embed_items(ids_only.candidate_tower, CATALOG.item_ids[3:])
    np.testing.assert_allclose(cold[0], cold[2], atol=1e-6)  # nothing but the (unknown) id is left


def test_l2_normalised_towers_output_unit_vectors():
    normalised = make_model(l2_normalize=True)
    queries = embed_queries(normalised.query_tower, requests())
    items = embed_items(normalised.candidate_tower, CATALOG.item_ids)
    np.testing.assert_allclose(np.linalg.norm(queries, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(items, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("share", [True, False])
def test_history_embedding_sharing_is_configurable(share):
    shared = make_model(share_item_embeddings=share)
    assert (shared.query_tower.history_items is shared.candidate_tower.items) is share


@pytest.mark.parametrize("configured, available, expected_dropped", [
    (["user_id", "search_history"], {"genres"}, ["search_history"]),
    (["user_id", "demographics", "region"], {"age"}, ["region"]),
    (["watch_history", "item_genres", "item_title"], {"title"}, ["item_genres"]),
])
def test_features_the_data_lacks_are_dropped(configured, available, expected_dropped):
    resolved = FeatureSet.resolve(configured, available)
    assert dropped_features(configured, available) == expected_dropped
    assert not any(getattr(resolved, name) for name in expected_dropped)
    assert set(resolved.enabled()) <= set(configured) | {"gender", "age", "occupation"}


def test_demographics_keep_only_the_columns_present():
    resolved = FeatureSet.resolve(["user_id", "demographics"], {"age"})
    assert (resolved.gender, resolved.age, resolved.occupation) == (False, True, False)


def test_a_query_tower_without_inputs_is_an_error():
    with pytest.raises(ValueError, match="query tower without inputs"):
        FeatureSet.resolve(["search_history", "item_genres"], {"genres"})


@pytest.mark.parametrize("overrides, message", [
    ({"retrieval.features": ["user_id", "watch_time"]}, "unknown feature"),
    ({"retrieval.features": ["item_genres"]}, "query tower needs"),
    ({"retrieval.early_stopping_k": 0}, "early_stopping_k"),
    ({"retrieval.early_stopping_patience": -1}, "early_stopping_patience"),
    ({"retrieval.optimizer": "rmsprop"}, "retrieval.optimizer"),
])
def test_bad_retrieval_config_names_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
