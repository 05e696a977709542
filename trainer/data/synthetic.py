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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainer.config import SyntheticConfig
from trainer.data.schema import SECONDS_PER_DAY, DataError, Dataset, validate_events, validate_items, validate_users

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
WORDS_PER_TOPIC = 4
_SYLLABLES = tuple(c + v for c in "bdfgklmnprstvz" for v in "aeiou")
_MAX_CHUNK_CELLS = 4_000_000  # users x items per sampling chunk: bounds the memory of the event draw.


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
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_vectors: np.ndarray
    item_vectors: np.ndarray
    item_bias: np.ndarray
    temperature: float

    def scores(self, user_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """The true affinities (the logits the events were drawn with, before availability).

        Args:
            user_ids: [B] user ids of this dataset.

        Returns:
            [B, M] float64, aligned with `item_ids`.

        Raises:
            DataError: an id is not a user of this dataset.
        """
        index = pd.Index(self.user_ids).get_indexer(list(user_ids))
        if (index < 0).any():
            unknown = [u for u, i in zip(user_ids, index) if i < 0][:5]
            raise DataError(f"synthetic ground truth: unknown user id(s) {unknown}")
        return self.user_vectors[index] @ self.item_vectors.T / self.temperature + self.item_bias[None, :]


@dataclasses.dataclass
class _Topics:
    centres: np.ndarray  # [K, D]
    names: list[str]
    words: list[list[str]]  # per topic: its name and made-up words
    weights: np.ndarray  # [K] share of items per topic


def generate(cfg: SyntheticConfig) -> Dataset:
    """Draws a synthetic dataset; the same config (seed included) gives identical tables.

    Returns:
        A validated `Dataset` named "synthetic" whose `ground_truth` is the `PlantedModel`.
    """
    rng = np.random.default_rng(cfg.seed)
    topics = _make_topics(cfg, rng)
    items, item_vectors, item_bias, durations = _make_items(cfg, topics, rng)
    users, user_vectors = _make_users(cfg, topics, rng)
    logits = user_vectors @ item_vectors.T / cfg.temperature + item_bias[None, :]
    events = _make_events(cfg, users, items, logits, user_vectors @ item_vectors.T, durations, topics, rng)
    truth = PlantedModel(
        user_ids=users["user_id"].to_numpy(dtype=object),
        item_ids=items["item_id"].to_numpy(dtype=object),
        user_vectors=user_vectors,
        item_vectors=item_vectors,
        item_bias=item_bias,
        temperature=cfg.temperature,
    )
    return Dataset(
        name="synthetic",
        events=validate_events(events, "synthetic"),
        users=validate_users(users, "synthetic"),
        items=validate_items(items, "synthetic"),
        ground_truth=truth,
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


def _make_events(
    cfg: SyntheticConfig,
    users: pd.DataFrame,
    items: pd.DataFrame,
    logits: np.ndarray,
    affinity: np.ndarray,
    durations: np.ndarray,
    topics: _Topics,
    rng: np.random.Generator,
) -> pd.DataFrame:
    n_users, n_items = logits.shape
    counts = np.clip(rng.poisson(cfg.events_per_user, n_users), 2, n_items // 2)
    times = _event_times(cfg, counts, rng)
    release = items["release_time"].to_numpy()
    chosen = np.full(times.shape, -1, dtype=np.int64)
    chunk = max(1, _MAX_CHUNK_CELLS // n_items)
    for start in range(0, n_users, chunk):
        rows = slice(start, min(start + chunk, n_users))
        chosen[rows] = _draw_items(logits[rows], times[rows], counts[rows], release, rng)
    user_index, step = np.nonzero(chosen >= 0)
    item_index = chosen[user_index, step]
    z = (affinity - affinity.mean(axis=1, keepdims=True)) / affinity.std(axis=1, keepdims=True)
    fraction = 1.0 / (1.0 + np.exp(-(1.5 * z[user_index, item_index] - 1.0 + rng.normal(0, 0.5, len(item_index)))))
    return pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[user_index],
            "item_id": items["item_id"].to_numpy()[item_index],
            "timestamp": times[user_index, step],
            "watch_time": np.round(durations[item_index] * fraction, 1),
            "query": _queries(cfg, items, item_index, topics, rng),
        }
    )


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
    logits: np.ndarray, times: np.ndarray, counts: np.ndarray, release: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Sequential softmax draws without replacement among released items (inverse CDF); -1 where none is left."""
    weights = np.exp(logits - logits.max(axis=1, keepdims=True))
    watched = np.zeros(logits.shape, dtype=bool)
    chosen = np.full(times.shape, -1, dtype=np.int64)
    for step in range(times.shape[1]):
        rows = np.flatnonzero(step < counts)
        allowed = (release[None, :] <= times[rows, step, None]) & ~watched[rows]
        cdf = np.cumsum(np.where(allowed, weights[rows], 0.0), axis=1)
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
