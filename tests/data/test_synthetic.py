"""The synthetic source: determinism, the data contract, and a planted signal models can learn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from trainer.config import SyntheticConfig
from trainer.data.schema import DataError, Dataset
from trainer.data.synthetic import PlantedModel, generate
from trainer.data.vocab import tokenize


def _truth(dataset: Dataset) -> PlantedModel:
    assert isinstance(dataset.ground_truth, PlantedModel), "synthetic data keeps its planted model"
    return dataset.ground_truth


def test_same_seed_gives_identical_tables(small_config: SyntheticConfig, small_synthetic: Dataset) -> None:
    again = generate(small_config)
    for name in ("events", "users", "items"):
        pd.testing.assert_frame_equal(getattr(again, name), getattr(small_synthetic, name))
    np.testing.assert_array_equal(_truth(again).user_vectors, _truth(small_synthetic).user_vectors)


def test_different_seed_gives_different_tables(small_config: SyntheticConfig, small_synthetic: Dataset) -> None:
    other = generate(dataclasses.replace(small_config, seed=small_config.seed + 1))
    assert not other.events[["user_id", "item_id"]].equals(small_synthetic.events[["user_id", "item_id"]])
    assert not np.allclose(_truth(other).item_vectors, _truth(small_synthetic).item_vectors)


def test_sizes_and_contract(small_config: SyntheticConfig, small_synthetic: Dataset) -> None:
    events, users, items = small_synthetic.events, small_synthetic.users, small_synthetic.items
    assert len(users) == small_config.num_users and len(items) == small_config.num_items
    per_user = events.groupby("user_id").size()
    assert per_user.min() >= 2
    assert abs(per_user.mean() - small_config.events_per_user) < 0.2 * small_config.events_per_user
    assert not events.duplicated(["user_id", "item_id"]).any(), "a user watched an item twice"
    assert (np.diff(events["timestamp"].to_numpy()) >= 0).all()
    assert events["rating"].isna().all() and (events["watch_time"] > 0).all()
    assert {"watch_time", "query", "gender", "age", "occupation", "region", "genres", "title", "release_time"} \
        <= small_synthetic.available()


def test_events_only_watch_released_items(small_synthetic: Dataset) -> None:
    release = small_synthetic.items.set_index("item_id")["release_time"]
    events = small_synthetic.events
    assert (release.loc[events["item_id"]].to_numpy() <= events["timestamp"].to_numpy()).all()
    assert (small_synthetic.items["release_time"] > events["timestamp"].min()).any(), "no item is uploaded later"


def test_queries_use_words_of_the_watched_topic(small_config: SyntheticConfig, small_synthetic: Dataset) -> None:
    items = small_synthetic.items.assign(topic=small_synthetic.items["genres"].str[0])
    words_by_topic = {
        topic: {t for title in group["title"] for t in tokenize(title)} | {topic}
        for topic, group in items.groupby("topic")
    }
    searched = small_synthetic.events.dropna(subset=["query"]).merge(items[["item_id", "topic"]], on="item_id")
    share = len(searched) / len(small_synthetic.events)
    assert abs(share - small_config.search_probability) < 0.05
    for query, topic in zip(searched["query"], searched["topic"]):
        assert set(tokenize(query)) <= words_by_topic[topic], (query, topic)


def test_planted_scores_rank_later_watches_far_above_popularity(small_synthetic: Dataset) -> None:
    """The signal is there: the planted scores find a user's later watches much better than popularity."""
    truth = _truth(small_synthetic)
    events = small_synthetic.events.sort_values(["user_id", "timestamp"], kind="stable")
    position = events.groupby("user_id").cumcount()
    size = events.groupby("user_id")["item_id"].transform("size")
    earlier, later = events[position < 0.7 * size], events[position >= 0.7 * size]
    users = np.asarray(sorted(set(later["user_id"])), dtype=object)
    user_row = pd.Index(users)
    item_column = pd.Index(truth.item_ids)
    popularity = np.bincount(item_column.get_indexer(earlier["item_id"]), minlength=len(item_column))

    def recall_at_10(scores: np.ndarray) -> float:
        scores = scores.astype(np.float64).copy()
        seen = earlier[earlier["user_id"].isin(users)]
        scores[user_row.get_indexer(seen["user_id"]), item_column.get_indexer(seen["item_id"])] = -np.inf
        top = np.argsort(-scores, axis=1)[:, :10]
        hit = np.zeros(scores.shape, dtype=bool)
        hit[np.arange(len(users))[:, None], top] = True
        found = hit[user_row.get_indexer(later["user_id"]), item_column.get_indexer(later["item_id"])]
        return float(pd.Series(found).groupby(later["user_id"].to_numpy()).mean().mean())

    planted = recall_at_10(truth.scores(users))
    popular = recall_at_10(np.tile(popularity, (len(users), 1)))
    assert planted > 2.5 * popular and planted > 0.2, (planted, popular)


def test_scores_follow_the_planted_vectors(small_synthetic: Dataset) -> None:
    truth = _truth(small_synthetic)
    users = [truth.user_ids[3], truth.user_ids[0]]
    expected = truth.user_vectors[[3, 0]] @ truth.item_vectors.T / truth.temperature + truth.item_bias
    np.testing.assert_allclose(truth.scores(users), expected)
    with pytest.raises(DataError, match="unknown user id"):
        truth.scores(["nobody"])


def test_demographics_shift_preferences(small_synthetic: Dataset) -> None:
    """Region is part of the planted preference: users of one region agree more than users across regions."""
    truth = _truth(small_synthetic)
    vectors = truth.user_vectors / np.linalg.norm(truth.user_vectors, axis=1, keepdims=True)
    similarity = vectors @ vectors.T
    region = small_synthetic.users.set_index("user_id").loc[truth.user_ids, "region"].to_numpy()
    same = region[:, None] == region[None, :]
    np.fill_diagonal(same, False)
    different = region[:, None] != region[None, :]
    assert similarity[same].mean() > similarity[different].mean() + 0.05
