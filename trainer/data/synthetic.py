"""Synthetic YouTube-like logs drawn from a planted latent model (source `synthetic`).

The generator is deterministic by `SyntheticConfig.seed` and keeps its ground truth
(`PlantedModel`), so tests can check that a trained model recovers the planted signal.

The planted model:
- topics: `num_topics` centres in R^D; each topic has a name (used as its genre) and a few
  made-up words, which are the vocabulary of titles and search queries of that topic.
- items: a main topic (popular topics hold more items) and, for some, a second one; a latent
  vector near the mean of their topic centres; a Zipf-like popularity bias
  (`-popularity_skew * log(rank)`); a duration; an upload time (a `new_item_fraction` of the
  items is uploaded during the logged period, the rest before it).
- users: gender, age, occupation and region; a preference vector = a region component + a
  demographic (gender x age group) component + a personal component, each built from topic
  centres, so demographics and geography carry real signal but each user is different.
- events: a user is active from a random start day to the end of the period; at each of
  their (Poisson-many) event times they watch one item drawn from
  softmax(user . item / temperature + item_bias) over the items uploaded before that time
  that they have not watched yet (exact sequential sampling by inverse CDF).
  watch_time (seconds) = duration * sigmoid(standardised affinity + noise). With probability
  `search_probability` an event carries the search query that led to it: 1-2 words of the
  watched item's topic. There are no explicit ratings (rating is missing), as on YouTube.

The YouTube world (Covington et al. 2016), each part off at 0 and on in configs/youtube.yaml:
- clickbait (`clickbait_fraction`): items whose click appeal adds CLICKBAIT_APPEAL to the logit
  of being chosen, and whose watches are short (the watch fraction's logit loses CLICKBAIT_PENALTY);
- freshness (`freshness_days`): an item's logit gains freshness_boost * (a / d) * exp(1 - a / d)
  at age a days (d = freshness_days): zero at upload, highest d days later, then decaying;
- channels (`num_channels`): uploaders with a topic mix; an item's channel is drawn by how much of
  the item's topic the channel uploads; each user favours FAVOURITE_CHANNELS channels (drawn by
  their affinity to the channel's topics), whose items gain CHANNEL_LOYALTY;
- languages (`num_languages`): every region speaks one language (most of its users do, the
  rest another), every channel uploads in one; an item in a language other than the user's
  loses LANGUAGE_PENALTY;
- impressions (`slate_size`): at each watch the logging policy showed a slate: the watched item
  and slate_size - 1 items the user passed over, drawn without replacement among the released
  items the user has not watched by then, mostly by popularity (item bias and freshness) and by
  the user's affinity (half each), an `exploration_share` uniformly. The event table is exactly
  the clicked impressions.
The new parts draw from their own random stream, so a config with all of them off gives the
same tables as before they existed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainer.config import SyntheticConfig
from trainer.data.schema import (
    SECONDS_PER_DAY,
    DataError,
    Dataset,
    validate_events,
    validate_impressions,
    validate_items,
    validate_users,
)

START_TIME = 1_672_531_200  # 2023-01-01T00:00:00Z: the first second of the logged period.
TOPIC_NAMES = (
    "comedy", "music", "gaming", "news", "sports", "science", "travel", "cooking", "fashion", "animation",
    "history", "nature", "fitness", "tech", "finance", "horror", "kids", "art", "cars", "drama",
)
OCCUPATIONS = (
    "student", "engineer", "teacher", "artist", "doctor", "writer", "sales", "farmer", "lawyer", "retired",
    "homemaker", "programmer",
)
AGE_GROUP_EDGES = (18, 25, 35, 50)
LANGUAGES = ("en", "es", "hi", "pt", "ja", "de", "fr", "ko", "ar", "ru")
WORDS_PER_TOPIC = 4
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
_MAX_CHUNK_CELLS = 4_000_000  # users x items per sampling chunk: bounds the memory of the event draw.
CLICKBAIT_APPEAL = 1.5
CLICKBAIT_PENALTY = 3.0
CHANNEL_LOYALTY = 1.0
FAVOURITE_CHANNELS = 3
LANGUAGE_PENALTY = 2.0
_WORLD_STREAM = 1  # the second key of the YouTube world's random stream: np.random.default_rng([seed, 1])


@dataclasses.dataclass
class World:
    """The YouTube world's part of the ground truth (each array all-zero / -1 / False when that part is off).

    Attributes:
        click_appeal: [M] float64 logit offset of choosing the item (CLICKBAIT_APPEAL for clickbait).
        clickbait: [M] bool.
        durations: [M] float64 seconds.
        release_time: [M] int64 unix seconds.
        freshness_days: d of the freshness curve (0: off).
        freshness_boost: its peak logit offset.
        item_channel: [M] int64 channel index (-1: no channels).
        favourite_channels: [U, F] int64 channels each user favours.
        item_language: [M] int64 language index (-1: no languages).
        user_language: [U] int64.
    """

    click_appeal: np.ndarray
    clickbait: np.ndarray
    durations: np.ndarray
    release_time: np.ndarray
    freshness_days: float
    freshness_boost: float
    item_channel: np.ndarray
    favourite_channels: np.ndarray
    item_language: np.ndarray
    user_language: np.ndarray

    @classmethod
    def off(cls, num_users: int, num_items: int) -> World:
        """A world with every part off: no clickbait, no freshness, channels or languages."""
        return cls(click_appeal=np.zeros(num_items), clickbait=np.zeros(num_items, dtype=bool),
                   durations=np.full(num_items, 420.0), release_time=np.zeros(num_items, dtype=np.int64),
                   freshness_days=0.0, freshness_boost=0.0, item_channel=np.full(num_items, -1),
                   favourite_channels=np.zeros((num_users, 0), dtype=np.int64),
                   item_language=np.full(num_items, -1), user_language=np.full(num_users, -1))

    def offsets(self, users: np.ndarray) -> np.ndarray:
        """[B, M] the time-free logit offsets of users (indices [B]): click appeal, channel loyalty, language."""
        out = np.broadcast_to(self.click_appeal, (len(users), len(self.click_appeal))).copy()
        if self.favourite_channels.shape[1]:
            loyal = (self.item_channel[None, :, None] == self.favourite_channels[users][:, None, :]).any(axis=2)
            out += CHANNEL_LOYALTY * loyal
        if (self.item_language >= 0).any():
            out -= LANGUAGE_PENALTY * (self.item_language[None, :] != self.user_language[users, None])
        return out

    def freshness(self, times: np.ndarray) -> np.ndarray:
        """[B, M] the logit offset of each item's age at times [B] (0 before upload and when off)."""
        if self.freshness_days <= 0:
            return np.zeros((len(times), len(self.release_time)))
        age_seconds = (np.asarray(times, dtype=np.int64)[:, None] - self.release_time[None, :]).astype(np.float32)
        ratio = np.maximum(age_seconds, 0.0) / np.float32(self.freshness_days * SECONDS_PER_DAY)
        return np.float32(self.freshness_boost) * ratio * np.exp(1.0 - ratio)


@dataclasses.dataclass
class PlantedModel:
    """The ground truth of a synthetic dataset.

    Attributes:
        user_ids: [U] str.
        item_ids: [M] str.
        user_vectors: [U, D] float64 preference vectors.
        item_vectors: [M, D] float64 item vectors.
        item_bias: [M] float64 popularity bias (a logit offset).
        temperature: the softmax temperature of the event draw.
        world: the YouTube world's clickbait, freshness, channels and languages (None: all off).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_bias: np.ndarray
    temperature: float
    world: World = None  # type: ignore[assignment]  # None becomes World.off in __post_init__

    def __post_init__(self) -> None:
        if self.world is None:
            self.world = World.off(len(self.user_ids), len(self.item_ids))

    def scores(self, user_ids: Sequence[str] | np.ndarray, times: np.ndarray | None = None) -> np.ndarray:
        """The true logits the watches were drawn with (before availability and the user's own watches).

        Args:
            user_ids: [B] user ids of this dataset.
            times: [B] unix seconds the freshness of each row is taken at; None leaves freshness out.

        Returns:
            [B, M] float64, aligned with `item_ids`.

        Raises:
            DataError: an id is not a user of this dataset.
        """
        index = self._user_index(user_ids)
        logits = self.user_vectors[index] @ self.item_vectors.T / self.temperature + self.item_bias[None, :]
        logits += self.world.offsets(index)
        return logits if times is None else logits + self.world.freshness(times)

    def expected_watch_time(self, user_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """[B, M] the planted watch time (seconds) of a watch of each item, before the noise.

        Raises:
            DataError: an id is not a user of this dataset.
        """
        affinity = self.user_vectors[self._user_index(user_ids)] @ self.item_vectors.T
        return self.world.durations[None, :] * _sigmoid(_fraction_logit(_standardised(affinity), self.world.clickbait))

    def _user_index(self, user_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        index = pd.Index(self.user_ids).get_indexer(list(user_ids))
        if (index < 0).any():
            unknown = [u for u, i in zip(user_ids, index) if i < 0][:5]
            raise DataError(f"synthetic ground truth: unknown user id(s) {unknown}")
        return index


@dataclasses.dataclass
class _Topics:
    centres: np.ndarray  # [K, D]
    names: list[str]
    words: list[list[str]]  # per topic: its name and made-up words
    weights: np.ndarray  # [K] share of items per topic


def generate(cfg: SyntheticConfig) -> Dataset:
    """Draws a synthetic dataset; the same config (seed included) gives identical tables.

    Returns:
        A validated `Dataset` named "synthetic" whose `ground_truth` is the `PlantedModel`; with
        `slate_size` > 0 it holds the impressions too.
    """
    rng = np.random.default_rng(cfg.seed)
    world_rng = np.random.default_rng([cfg.seed, _WORLD_STREAM])
    topics = _make_topics(cfg, rng)
    items, item_vectors, item_bias, durations = _make_items(cfg, topics, rng)
    users, user_vectors = _make_users(cfg, topics, rng)
    world = _make_world(cfg, topics, items, users, user_vectors, durations, world_rng)
    affinity = user_vectors @ item_vectors.T
    logits = affinity / cfg.temperature + item_bias[None, :] + world.offsets(np.arange(len(users)))
    events, impressions = _make_events(cfg, users, items, logits, affinity, world, topics, rng, world_rng)
    truth = PlantedModel(
        user_ids=users["user_id"].to_numpy(dtype=object),
        item_ids=items["item_id"].to_numpy(dtype=object),
        user_vectors=user_vectors,
        item_vectors=item_vectors,
        item_bias=item_bias,
        temperature=cfg.temperature,
        world=world,
    )
    return Dataset(
        name="synthetic",
        events=validate_events(events, "synthetic"),
        users=validate_users(users, "synthetic"),
        items=validate_items(items, "synthetic"),
        ground_truth=truth,
        impressions=None if impressions is None else validate_impressions(impressions, "synthetic"),
    )


def _make_topics(cfg: SyntheticConfig, rng: np.random.Generator) -> _Topics:
    names = [TOPIC_NAMES[k] if k < len(TOPIC_NAMES) else f"topic{k}" for k in range(cfg.num_topics)]
    centres = rng.normal(0.0, 1.0, (cfg.num_topics, cfg.latent_dim))
    centres *= 2.0 / np.linalg.norm(centres, axis=1, keepdims=True)
    used: set[str] = set(names)
    words = []
    for name in names:
        topic_words = [name]
        while len(topic_words) < WORDS_PER_TOPIC:
            word = "".join(rng.choice(_SYLLABLES, size=int(rng.integers(2, 4))))
            if word not in used:
                used.add(word)
                topic_words.append(word)
        words.append(topic_words)
    weights = rng.dirichlet(np.full(cfg.num_topics, 2.0))
    return _Topics(centres=centres, names=names, words=words, weights=weights)


def _make_items(
    cfg: SyntheticConfig, topics: _Topics, rng: np.random.Generator
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    m = cfg.num_items
    main = rng.choice(cfg.num_topics, size=m, p=topics.weights)
    second = np.where(rng.random(m) < 0.3, rng.integers(0, cfg.num_topics, m), -1)
    second[second == main] = -1
    vectors = topics.centres[main].copy()
    has_second = second >= 0
    vectors[has_second] = 0.7 * vectors[has_second] + 0.3 * topics.centres[second[has_second]]
    vectors += rng.normal(0.0, 0.35, vectors.shape)
    rank = rng.permutation(m) + 1
    bias = -cfg.popularity_skew * np.log(rank)
    bias -= bias.mean()
    durations = np.clip(rng.lognormal(np.log(420.0), 0.6, m), 30.0, 3600.0)
    period = cfg.days * SECONDS_PER_DAY
    is_new = rng.random(m) < cfg.new_item_fraction
    release = np.where(
        is_new,
        START_TIME + rng.integers(0, int(period * 0.9), m),
        START_TIME - rng.integers(1, 365 * SECONDS_PER_DAY, m),
    )
    width = len(str(m))
    items = pd.DataFrame(
        {
            "item_id": [f"v{i:0{width}d}" for i in range(m)],
            "title": [_title(topics.words[t], i, rng) for i, t in enumerate(main)],
            "genres": [
                [topics.names[t]] + ([topics.names[s]] if s >= 0 else []) for t, s in zip(main, second)
            ],
            "release_time": release.astype(np.int64),
        }
    )
    return items, vectors, bias, durations


def _title(words: list[str], index: int, rng: np.random.Generator) -> str:
    chosen = rng.choice(len(words), size=2, replace=False)
    return " ".join(words[c].capitalize() for c in chosen) + f" {index}"


def _make_users(cfg: SyntheticConfig, topics: _Topics, rng: np.random.Generator) -> tuple[pd.DataFrame, np.ndarray]:
    n, d, k = cfg.num_users, cfg.latent_dim, cfg.num_topics

    def topic_mixture(count: int, topics_each: int) -> np.ndarray:
        picks = rng.choice(k, size=(count, topics_each), p=topics.weights)
        return topics.centres[picks].mean(axis=1) + rng.normal(0.0, 0.2, (count, d))

    region_vectors = topic_mixture(cfg.num_regions, 2)
    gender_code = rng.choice(3, size=n, p=[0.48, 0.48, 0.04])  # 2 = unknown
    age = np.where(rng.random(n) < 0.05, 0, rng.integers(13, 71, n))
    age_group = np.searchsorted(AGE_GROUP_EDGES, age, side="right")
    demo_vectors = topic_mixture(3 * (len(AGE_GROUP_EDGES) + 1), 2)
    region = rng.integers(0, cfg.num_regions, n)
    personal = topic_mixture(n, 2)
    vectors = 0.8 * region_vectors[region] + 0.6 * demo_vectors[gender_code * (len(AGE_GROUP_EDGES) + 1) + age_group]
    vectors += 1.2 * personal
    width = len(str(n))
    users = pd.DataFrame(
        {
            "user_id": [f"u{i:0{width}d}" for i in range(n)],
            "gender": np.array(["M", "F", ""], dtype=object)[gender_code],
            "age": age.astype(np.int64),
            "occupation": np.array(OCCUPATIONS, dtype=object)[rng.integers(0, len(OCCUPATIONS), n)],
            "region": np.array([f"region{r}" for r in range(cfg.num_regions)], dtype=object)[region],
        }
    )
    return users, vectors


def _make_world(cfg: SyntheticConfig, topics: _Topics, items: pd.DataFrame, users: pd.DataFrame,
                user_vectors: np.ndarray, durations: np.ndarray, rng: np.random.Generator) -> World:
    """Clickbait, channels and languages (adding their columns to `items` and `users`), and the freshness curve."""
    m, n = len(items), len(users)
    clickbait = rng.random(m) < cfg.clickbait_fraction
    main_topic = pd.Index(topics.names).get_indexer(items["genres"].str[0])
    item_channel, favourites = np.full(m, -1), np.zeros((n, 0), dtype=np.int64)
    if cfg.num_channels:
        mix = rng.dirichlet(np.full(cfg.num_topics, 0.3), cfg.num_channels)  # [C, K] each channel's topics
        item_channel = _draw_rows(mix[:, main_topic].T, rng)
        channel_affinity = user_vectors @ (mix @ topics.centres).T  # [U, C]
        gumbel = -np.log(-np.log(rng.random(channel_affinity.shape)))
        favourites = np.argsort(-(channel_affinity + gumbel), axis=1)[:, :min(FAVOURITE_CHANNELS, cfg.num_channels)]
    item_language, user_language = np.full(m, -1), np.full(n, -1)
    if cfg.num_languages:
        share = 1.0 / np.arange(1, cfg.num_languages + 1)
        share /= share.sum()
        region = users["region"].str.removeprefix("region").astype(int).to_numpy()
        region_language = rng.choice(cfg.num_languages, size=cfg.num_regions, p=share)
        user_language = np.where(rng.random(n) < 0.85, region_language[region],
                                 rng.choice(cfg.num_languages, size=n, p=share))
        channel_language = rng.choice(cfg.num_languages, size=max(cfg.num_channels, 1), p=share)
        item_language = (channel_language[item_channel] if cfg.num_channels
                         else rng.choice(cfg.num_languages, size=m, p=share))
    items["channel"] = [f"ch{c}" if c >= 0 else "" for c in item_channel]
    items["language"] = [_language_name(k) for k in item_language]
    users["language"] = [_language_name(k) for k in user_language]
    return World(click_appeal=CLICKBAIT_APPEAL * clickbait, clickbait=clickbait, durations=durations,
                 release_time=items["release_time"].to_numpy(dtype=np.int64), freshness_days=cfg.freshness_days,
                 freshness_boost=cfg.freshness_boost, item_channel=item_channel.astype(np.int64),
                 favourite_channels=favourites.astype(np.int64), item_language=item_language.astype(np.int64),
                 user_language=user_language.astype(np.int64))


def _language_name(index: int) -> str:
    return "" if index < 0 else (LANGUAGES[index] if index < len(LANGUAGES) else f"lang{index}")


def _draw_rows(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[R] one column index per row of `weights` [R, C], drawn in proportion to the row."""
    cdf = np.cumsum(weights, axis=1)
    threshold = rng.random(len(weights)) * cdf[:, -1]
    return np.minimum((cdf <= threshold[:, None]).sum(axis=1), weights.shape[1] - 1)


def _make_events(
    cfg: SyntheticConfig,
    users: pd.DataFrame,
    items: pd.DataFrame,
    logits: np.ndarray,
    affinity: np.ndarray,
    world: World,
    topics: _Topics,
    rng: np.random.Generator,
    world_rng: np.random.Generator,
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """The events and, with `slate_size` > 0, the impressions (the events are their clicked rows)."""
    n_users, n_items = logits.shape
    counts = np.clip(rng.poisson(cfg.events_per_user, n_users), 2, n_items // 2)
    times = _event_times(cfg, counts, rng)
    release = items["release_time"].to_numpy()
    chosen = np.full(times.shape, -1, dtype=np.int64)
    passed_over = np.full((*times.shape, max(cfg.slate_size - 1, 0)), -1, dtype=np.int64)
    chunk = max(1, _MAX_CHUNK_CELLS // n_items)
    for start in range(0, n_users, chunk):
        rows = slice(start, min(start + chunk, n_users))
        chosen[rows] = _draw_items(logits[rows], times[rows], counts[rows], release, rng, world)
        if cfg.slate_size:
            passed_over[rows] = _slates(logits[rows], chosen[rows], times[rows], world, cfg, world_rng)
    user_index, step = np.nonzero(chosen >= 0)
    item_index = chosen[user_index, step]
    fraction_logit = _fraction_logit(_standardised(affinity)[user_index, item_index], world.clickbait[item_index])
    fraction = _sigmoid(fraction_logit + rng.normal(0, 0.5, len(item_index)))
    user_ids, item_ids = users["user_id"].to_numpy(), items["item_id"].to_numpy()
    events = pd.DataFrame(
        {
            "user_id": user_ids[user_index],
            "item_id": item_ids[item_index],
            "timestamp": times[user_index, step],
            "watch_time": np.round(world.durations[item_index] * fraction, 1),
            "query": _queries(cfg, items, item_index, topics, rng),
        }
    )
    if not cfg.slate_size:
        return events, None
    shown = passed_over[user_index, step]  # [E, S - 1]
    event_row, slot = np.nonzero(shown >= 0)
    unclicked = pd.DataFrame({"user_id": events["user_id"].to_numpy()[event_row],
                              "item_id": item_ids[shown[event_row, slot]],
                              "timestamp": events["timestamp"].to_numpy()[event_row],
                              "clicked": False, "watch_time": 0.0})
    clicked = events[["user_id", "item_id", "timestamp", "watch_time"]].assign(clicked=True)
    return events, pd.concat([clicked, unclicked], ignore_index=True)


def _standardised(affinity: np.ndarray) -> np.ndarray:
    """Each user's affinities [U, M] as z-scores over the items."""
    return (affinity - affinity.mean(axis=1, keepdims=True)) / affinity.std(axis=1, keepdims=True)


def _fraction_logit(z: np.ndarray, clickbait: np.ndarray) -> np.ndarray:
    """The logit of the watched fraction of an item's duration, before noise: high affinity, long watches."""
    return 1.5 * z - 1.0 - CLICKBAIT_PENALTY * clickbait


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _slates(logits: np.ndarray, chosen: np.ndarray, times: np.ndarray, world: World, cfg: SyntheticConfig,
            rng: np.random.Generator) -> np.ndarray:
    """[U, T, S - 1] the items shown beside each watch and passed over (-1 pads a slate short of items).

    Drawn without replacement (Gumbel top-k) from a mixture over the released items the user has not
    watched up to then: half of (1 - exploration_share) by popularity (the audience's mean logit and
    freshness), half by the user's logits, and exploration_share uniform. The policy does not know
    which items are clickbait: it sees the logits without their click appeal.
    """
    width = cfg.slate_size - 1
    logits = (logits - world.click_appeal[None, :]).astype(np.float32)
    popularity = logits.mean(axis=0)
    watched = np.zeros(logits.shape, dtype=bool)
    out = np.full((*chosen.shape, width), -1, dtype=np.int64)
    for step in range(chosen.shape[1]):
        rows = np.flatnonzero(chosen[:, step] >= 0)
        if not len(rows):
            continue
        watched[rows, chosen[rows, step]] = True
        fresh = world.freshness(times[rows, step])
        allowed = (world.release_time[None, :] <= times[rows, step, None]) & ~watched[rows]
        mixture = (cfg.exploration_share * _masked_softmax(np.zeros_like(fresh), allowed)
                   + (1.0 - cfg.exploration_share) / 2 * _masked_softmax(popularity[None, :] + fresh, allowed)
                   + (1.0 - cfg.exploration_share) / 2 * _masked_softmax(logits[rows] + fresh, allowed))
        uniform = np.clip(rng.random(mixture.shape, dtype=np.float32), 1e-7, 1.0 - 1e-7)
        gumbel = -np.log(-np.log(uniform))
        keys = np.where(allowed, np.log(np.maximum(mixture, 1e-30)) + gumbel, -np.inf)
        top = np.argpartition(-keys, width - 1, axis=1)[:, :width]
        out[rows, step] = np.where(np.take_along_axis(allowed, top, axis=1), top, -1)
    return out


def _masked_softmax(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    shifted = np.where(allowed, logits, -np.inf)
    weights = np.exp(shifted - np.max(shifted, axis=1, keepdims=True, initial=-1e30, where=allowed))
    total = weights.sum(axis=1, keepdims=True)
    return weights / np.where(total > 0, total, 1.0)


def _event_times(cfg: SyntheticConfig, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """[U, max count] sorted event times per user; slots beyond a user's count hold a huge sentinel."""
    period = cfg.days * SECONDS_PER_DAY
    first = START_TIME + rng.integers(0, int(period * 0.7), len(counts))
    span = START_TIME + period - first
    offsets = np.sort(rng.random((len(counts), counts.max())), axis=1)
    times = first[:, None] + (offsets * span[:, None]).astype(np.int64)
    slot = np.arange(counts.max())[None, :]
    return np.where(slot < counts[:, None], times, np.iinfo(np.int64).max)


def _draw_items(
    logits: np.ndarray, times: np.ndarray, counts: np.ndarray, release: np.ndarray, rng: np.random.Generator,
    world: World,
) -> np.ndarray:
    """Sequential softmax draws without replacement among released items (inverse CDF); -1 where none is left.

    The logits of each draw gain the items' freshness at its time (`World.freshness`, 0 when off).
    """
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    watched = np.zeros(logits.shape, dtype=bool)
    chosen = np.full(times.shape, -1, dtype=np.int64)
    for step in range(times.shape[1]):
        rows = np.flatnonzero(step < counts)
        step_weights = weights[rows]
        if world.freshness_days > 0:
            step_weights = step_weights * np.exp(world.freshness(times[rows, step]))
        allowed = (release[None, :] <= times[rows, step, None]) & ~watched[rows]
        cdf = np.cumsum(np.where(allowed, step_weights, 0.0), axis=1)
        total = cdf[:, -1]
        threshold = rng.random(len(rows)) * total
        pick = np.minimum((cdf <= threshold[:, None]).sum(axis=1), logits.shape[1] - 1)
        ok = total > 0
        chosen[rows[ok], step] = pick[ok]
        watched[rows[ok], pick[ok]] = True
    return chosen


def _queries(
    cfg: SyntheticConfig, items: pd.DataFrame, item_index: np.ndarray, topics: _Topics, rng: np.random.Generator
) -> list[str | None]:
    main_topic = {name: k for k, name in enumerate(topics.names)}
    item_topic = np.array([main_topic[g[0]] for g in items["genres"]])
    searched = rng.random(len(item_index)) < cfg.search_probability
    lengths = rng.integers(1, 3, len(item_index))
    word_picks = rng.integers(0, WORDS_PER_TOPIC, (len(item_index), 2))
    queries: list[str | None] = [None] * len(item_index)
    for row in np.flatnonzero(searched):
        words = topics.words[item_topic[item_index[row]]]
        picks = dict.fromkeys(word_picks[row, : lengths[row]])  # keeps order, drops a repeated word
        queries[row] = " ".join(words[p] for p in picks)
    return queries
