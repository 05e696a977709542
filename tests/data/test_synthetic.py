"""The synthetic source: determinism, the data contract, and a planted signal models can learn."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from trainer.config import SyntheticConfig
from trainer.data.schema import DataError, Dataset, check_watches_agree
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


WORLD = dataclasses.replace(SyntheticConfig(num_users=300, num_items=200, num_topics=6, latent_dim=8,
                                            events_per_user=25, num_regions=4, days=60, seed=11),
                            slate_size=6, clickbait_fraction=0.1, freshness_days=2.0, num_channels=12,
                            num_languages=3)


@pytest.fixture(scope="module")
def world() -> Dataset:
    return generate(WORLD)


def test_the_youtube_world_is_off_by_default(small_synthetic: Dataset) -> None:
    assert small_synthetic.impressions is None
    assert (small_synthetic.items["channel"] == "").all() and (small_synthetic.users["language"] == "").all()
    assert not _truth(small_synthetic).world.clickbait.any()
    assert not {"impressions", "channel", "language"} & small_synthetic.available()


def test_the_world_is_deterministic_and_its_watches_are_the_clicked_impressions(world: Dataset) -> None:
    again = generate(WORLD)
    assert world.impressions is not None and again.impressions is not None
    pd.testing.assert_frame_equal(again.impressions, world.impressions)
    check_watches_agree(world.events, world.impressions, "world")
    assert {"impressions", "channel", "language"} <= world.available()


def test_each_watch_was_shown_in_a_slate_of_unwatched_released_items(world: Dataset) -> None:
    impressions = world.impressions
    assert impressions is not None
    slates = impressions.groupby(["user_id", "timestamp"])
    watches = world.events.groupby(["user_id", "timestamp"]).size()
    pd.testing.assert_series_equal(slates["clicked"].sum(), watches, check_names=False)  # a slate per watch
    assert (slates.size() / watches).median() == WORLD.slate_size
    release = world.items.set_index("item_id")["release_time"]
    assert (release.loc[impressions["item_id"]].to_numpy() <= impressions["timestamp"].to_numpy()).all()
    first_watch = world.events.groupby(["user_id", "item_id"])["timestamp"].min()
    passed = impressions[~impressions["clicked"]]
    watched_at = first_watch.reindex(pd.MultiIndex.from_frame(passed[["user_id", "item_id"]])).to_numpy()
    assert not (watched_at < passed["timestamp"].to_numpy()).any(), "a slate showed an item the user had watched"


def test_clickbait_is_clicked_more_and_watched_less(world: Dataset) -> None:
    impressions = world.impressions
    assert impressions is not None
    clickbait = pd.Series(_truth(world).world.clickbait, index=_truth(world).item_ids)
    shown = impressions.assign(clickbait=clickbait.loc[impressions["item_id"]].to_numpy())
    by_kind = shown.groupby("clickbait").agg(ctr=("clicked", "mean"), watch_per_impression=("watch_time", "mean"))
    clicks = shown[shown["clicked"]].groupby("clickbait")["watch_time"].mean()
    assert by_kind.loc[True, "ctr"] > 1.5 * by_kind.loc[False, "ctr"]
    assert clicks.loc[True] < 0.5 * clicks.loc[False]
    assert by_kind.loc[True, "watch_per_impression"] < by_kind.loc[False, "watch_per_impression"]


def test_fresh_items_are_watched_soon_after_upload(world: Dataset) -> None:
    stale = generate(dataclasses.replace(WORLD, freshness_days=0.0))

    def early_share(dataset: Dataset) -> float:
        release = dataset.items.set_index("item_id")["release_time"]
        age_days = (dataset.events["timestamp"] - release.loc[dataset.events["item_id"]].to_numpy()) / 86_400
        in_period = age_days[release.loc[dataset.events["item_id"]].to_numpy() > dataset.events["timestamp"].min()]
        return float((in_period < 4 * WORLD.freshness_days).mean())

    assert early_share(world) > 1.3 * early_share(stale)


def test_users_favour_their_channels_and_their_language(world: Dataset) -> None:
    truth = _truth(world).world
    user = pd.Index(_truth(world).user_ids).get_indexer(world.events["user_id"])
    item = pd.Index(_truth(world).item_ids).get_indexer(world.events["item_id"])
    favourite = (truth.item_channel[item][:, None] == truth.favourite_channels[user]).any(axis=1)
    favourite_items = (truth.item_channel[None, :, None] == truth.favourite_channels[:, None, :]).any(axis=2).mean()
    assert favourite.mean() > 1.5 * favourite_items
    same_language = truth.item_language[item] == truth.user_language[user]
    language_items = (truth.item_language[None, :] == truth.user_language[:, None]).mean()
    assert same_language.mean() > 1.3 * language_items
    assert world.items["channel"].str.startswith("ch").all() and (world.users["language"] != "").all()


def test_the_planted_watch_time_demotes_clickbait(world: Dataset) -> None:
    truth = _truth(world)
    expected = truth.expected_watch_time(truth.user_ids[:50])
    assert expected.shape == (50, len(truth.item_ids))
    assert expected[:, truth.world.clickbait].mean() < 0.5 * expected[:, ~truth.world.clickbait].mean()
