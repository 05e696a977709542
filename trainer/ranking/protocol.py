"""The inputs of one evaluation protocol: training examples, held-out sets and the model context.

- `temporal_protocol`: what serving faces. Train on the temporal training split; validate and
  test on later events, each held-out event ranked against sampled negatives, plus a full
  ranking of the catalogue for the test users at the start of the test period.
- `ncf_protocol`: He et al. 2017. Leave-last-out: each user's latest event is the test item,
  ranked among the 99 sampled negatives of `trainer.data.splits.leave_last_out`; the latest
  remaining event of each user is the validation hold-out (for early stopping and tuning),
  ranked among negatives that are none of the user's items (the test item included), and the
  models train on the rest.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import pandas as pd

from recsys_common import contract
from trainer.config import Config
from trainer.context import ModelContext
from trainer.data.bundle import TrainingData
from trainer.data.catalog import ItemCatalog
from trainer.data.examples import ITEM_ID, WATCH_TIME, event_examples, impression_examples, query_examples
from trainer.data.pipeline import AGE_BUCKETS
from trainer.data.schema import DataError, Dataset
from trainer.data.splits import LeaveLastOut, hold_out_last, leave_last_out, sample_negatives
from trainer.data.tfrecord import Manifest
from trainer.data.vocab import Vocabularies
from trainer.ranking.rows import CandidatePools, RowScores

USER_INPUT_NAMES = tuple(spec.name for spec in contract.USER_INPUTS + contract.RANKING_CONTEXT_INPUTS)


@dataclasses.dataclass
class SampledSet:
    """Held-out positives, each ranked against sampled negatives.

    Attributes:
        inputs: the user inputs [R] / [R, H] and candidate_ids [R, 1 + N], the held-out item first.
        watch_time: [R] the held-out events' watch time (NaN = unknown).
    """

    inputs: dict[str, np.ndarray]
    watch_time: np.ndarray

    def __len__(self) -> int:
        return len(self.watch_time)


@dataclasses.dataclass
class FullRankingSet:
    """Users whose relevant items are searched for in the whole pool.

    Attributes:
        contexts: user inputs [U] / [U, H] at request time.
        relevant: [U] the items each user watched next.
        exclude: [U] items the user had already watched (never recommended again).
        pool: [M] every candidate item id.
        relevant_watch_time: [U] relevant item -> the user's total watch time of it in the period
            (items of unknown watch time left out); None when the data has no watch time.
    """

    contexts: dict[str, np.ndarray]
    relevant: list[frozenset[str]]
    exclude: list[frozenset[str]]
    pool: np.ndarray
    relevant_watch_time: list[dict[str, float]] | None = None

    def __len__(self) -> int:
        return len(self.relevant)


@dataclasses.dataclass
class RankingData:
    """What training and evaluating a ranking model on one protocol needs.

    Attributes:
        name: "temporal" or "ncf".
        space: vocabularies (from the training events only) and the catalogue.
        train: event_examples of the training events (item_id, watch_time and the user inputs).
        seen: user -> items of their training events (never sampled as their negatives).
        validation, test: held-out sets with sampled negatives.
        full_ranking: the test users for full-corpus ranking.
        train_stream: the preprocessed shards to train from (`data.prepared_dir`): their events, or their
            impressions when the model trains on those; `train` (or `impressions`) is then a sample of them,
            used for the feature statistics and the watch-time unit.
        candidate_pools: per user, the candidate generator's top unseen items, for the negatives drawn
            from them (`ranking.candidate_negatives`); None: uniform negatives only.
        out_of_fold: cross-fitted retrieval scores of the `train` rows (`ranking.retrieval_score_folds`);
            None: the model's own scorer scores them.
        impressions: `impression_examples` of the training period's impressions; when given, the model
            trains on them (and takes its feature statistics from them) instead of `train` (`ranking.train_on`).
    """

    name: str
    space: ModelContext
    train: dict[str, np.ndarray]
    seen: Mapping[str, frozenset[str]]
    validation: SampledSet | None
    test: SampledSet
    full_ranking: FullRankingSet | None
    train_stream: Manifest | None = None
    candidate_pools: CandidatePools | None = None
    out_of_fold: RowScores | None = None
    impressions: dict[str, np.ndarray] | None = None

    @property
    def training_examples(self) -> dict[str, np.ndarray]:
        """What the training rows come from, in memory: the impressions when given, else the watches."""
        return self.train if self.impressions is None else self.impressions


def feature_space(vocab: Vocabularies, catalog: ItemCatalog, train_events: pd.DataFrame,
                  available: set[str]) -> ModelContext:
    """The model context of a training split (example age spans its time range)."""
    times = train_events["timestamp"].to_numpy()
    t_max = int(times.max())
    return ModelContext.build(vocab, catalog, t_max, max(1, t_max - int(times.min())), available, AGE_BUCKETS)


def temporal_protocol(data: TrainingData, config: Config) -> RankingData:
    """The temporal split of the run's data (`trainer.data.bundle.prepare`)."""
    split = data.split
    space = ModelContext.of_run(data)
    rng = np.random.default_rng(config.seed)
    every_item = items_by_user(data.dataset.events)
    pool = np.asarray(space.catalog.item_ids, dtype=object)
    limit, negatives = config.ranking.eval_max_examples, config.data.eval_negatives
    validation = None
    if len(split.validation):
        validation = _sampled(_subsample(data.validation_examples, limit, rng), every_item, pool, negatives, rng)
    before_test = pd.concat([split.train, split.validation], ignore_index=True)
    return RankingData(
        name="temporal", space=space, train=data.train_examples, seen=items_by_user(split.train),
        validation=validation,
        test=_sampled(_subsample(data.test_examples, limit, rng), every_item, pool, negatives, rng),
        full_ranking=_future_items(data.dataset, before_test, split.test, split.test_start, pool, config, rng),
        train_stream=data.shards,
        impressions=training_impressions(data, config, before=split.validation_start),
    )


def training_impressions(data: TrainingData, config: Config, before: int | None = None
                         ) -> dict[str, np.ndarray] | None:
    """`impression_examples` of the impressions shown before `before` (None: all), with the training watches
    as their histories; None when the ranker trains on watches (`ranking.train_on`, and logs without impressions).
    From preprocessed shards: the in-memory sample of their training impressions (the ranker streams them all).

    Raises:
        DataError: ranking.train_on is "impressions" and the logs hold none.
    """
    train_on = config.ranking.train_on
    if train_on == "impressions" and not data.has_impressions:
        raise DataError(f"ranking.train_on: impressions, but the {data.dataset.name} logs hold no impressions; "
                        "set it to auto or watches, or give the logs an impression table")
    if train_on == "watches" or not data.has_impressions:
        return None
    if data.impression_sample is not None:  # the shards' training split is the training period
        return data.impression_sample
    impressions = data.dataset.impressions
    assert impressions is not None
    if before is not None:
        impressions = impressions[impressions["timestamp"].to_numpy() < before]
    if impressions.empty:
        raise DataError(f"{data.dataset.name}: no impression falls in the training period")
    return impression_examples(impressions, data.split.train, data.dataset.users, data.history_length,
                               data.search_history_length)


def ncf_protocol(dataset: Dataset, config: Config, split: LeaveLastOut | None = None) -> RankingData:
    """Leave-last-out with sampled negatives (He et al. 2017) on the events of `dataset`.

    Args:
        dataset: the source's tables.
        config: data.eval_negatives, data.history_length, data.search_history_length, data.seed.
        split: a leave-last-out split to reuse (e.g. the one the implicit baselines use); by default
            `leave_last_out(dataset.events, data.eval_negatives, data.seed)`.
    """
    data_config = config.data
    outer = split or leave_last_out(dataset.events, data_config.eval_negatives, data_config.seed)
    inner = leave_last_out(outer.train, data_config.eval_negatives, data_config.seed + 1)
    vocab = Vocabularies.from_training(inner.train, dataset.users, dataset.items)
    space = feature_space(vocab, ItemCatalog.from_items(dataset.items), inner.train, dataset.available())
    lengths = (data_config.history_length, data_config.search_history_length)
    test_examples = event_examples(outer.test, dataset.users, *lengths, history_events=outer.train)
    seen = items_by_user(outer.train)
    every_item = items_by_user(dataset.events)
    # inner.negatives avoid only the items before the test event: the test item could be a validation negative
    validation_negatives = sample_negatives([every_item[str(user)] for user in inner.test["user_id"]],
                                            np.sort(inner.train["item_id"].unique()), data_config.eval_negatives,
                                            np.random.default_rng(data_config.seed + 1))
    return RankingData(
        name="ncf", space=space, train=event_examples(inner.train, dataset.users, *lengths), seen=items_by_user(
            inner.train),
        validation=_with_negatives(event_examples(inner.test, dataset.users, *lengths, history_events=inner.train),
                                   validation_negatives),
        test=_with_negatives(test_examples, outer.negatives),
        full_ranking=FullRankingSet(
            contexts=_user_inputs(test_examples),
            relevant=[frozenset([item]) for item in test_examples[ITEM_ID]],
            exclude=[seen.get(user, frozenset()) for user in test_examples[contract.USER_ID]],
            pool=np.asarray(space.catalog.item_ids, dtype=object)),
    )


def check_eval_negatives(data: TrainingData, config: Config) -> None:
    """Refuses, before anything trains, a data.eval_negatives that some held-out user cannot be given.

    Each held-out item is ranked among data.eval_negatives items its user never interacted with, drawn from
    a pool: the catalogue in the temporal protocol, the training items of the outer (test) and inner
    (validation) leave-last-out splits in the NCF protocol.

    Raises:
        DataError: naming data.eval_negatives, the user and pool that fall short, and the largest value that works.
    """
    wanted = config.data.eval_negatives
    events = data.dataset.events
    outer_train, outer_test = hold_out_last(events)
    inner_train, inner_test = hold_out_last(outer_train)
    temporal_users = np.concatenate([data.validation_examples[contract.USER_ID], data.test_examples[contract.USER_ID]])
    rooms = [room for room in (
        _fewest_negatives(events, temporal_users, data.catalog.item_ids, "the temporal protocol (the catalogue)"),
        _fewest_negatives(events, outer_test["user_id"], outer_train["item_id"], "the NCF protocol's test"),
        _fewest_negatives(events, inner_test["user_id"], inner_train["item_id"], "the NCF protocol's validation"),
    ) if room is not None]
    tightest = min(rooms, key=lambda room: room.available, default=None)
    if tightest is not None and tightest.available < wanted:
        raise DataError(
            f"data.eval_negatives is {wanted}, but user {tightest.user!r} has interacted with "
            f"{tightest.pool_size - tightest.available} of the {tightest.pool_size} items that {tightest.pool} "
            f"draws negatives from, which leaves {tightest.available}; set data.eval_negatives to at most "
            f"{tightest.available}, or train on a log with more items")


@dataclasses.dataclass(frozen=True)
class _NegativesRoom:
    """The user with the fewest pool items they never interacted with, and how many that is; `pool` names
    the protocol that draws from it."""

    user: str
    available: int
    pool_size: int
    pool: str


def _fewest_negatives(events: pd.DataFrame, users: np.ndarray | pd.Series, pool_items: np.ndarray | pd.Series,
                      pool: str) -> _NegativesRoom | None:
    users = pd.unique(pd.Series(users, dtype=object))
    if not len(users):
        return None
    pool_index = pd.Index(pool_items).unique()
    theirs = events[events["user_id"].isin(users) & events["item_id"].isin(pool_index)]
    owned = theirs.groupby("user_id")["item_id"].nunique().reindex(users, fill_value=0)
    user = owned.idxmax()
    return _NegativesRoom(str(user), len(pool_index) - int(owned[user]), len(pool_index), pool)


def items_by_user(events: pd.DataFrame) -> dict[str, frozenset[str]]:
    """user id -> the set of items of their events."""
    return {str(user): frozenset(items) for user, items in events.groupby("user_id")["item_id"]}


def _with_negatives(examples: dict[str, np.ndarray], negatives: np.ndarray) -> SampledSet:
    inputs = _user_inputs(examples)
    inputs[contract.CANDIDATE_IDS] = np.concatenate(
        [np.asarray(examples[ITEM_ID], dtype=object)[:, None], np.asarray(negatives, dtype=object)], axis=1)
    return SampledSet(inputs=inputs, watch_time=np.asarray(examples[WATCH_TIME], dtype=np.float32))


def _sampled(examples: dict[str, np.ndarray], every_item: Mapping[str, frozenset[str]], pool: np.ndarray,
             num_negatives: int, rng: np.random.Generator) -> SampledSet:
    users = examples[contract.USER_ID]
    negatives = sample_negatives([every_item.get(u, frozenset()) for u in users], pool, num_negatives, rng)
    return _with_negatives(examples, negatives)


def _future_items(dataset: Dataset, before: pd.DataFrame, after: pd.DataFrame, request_time: int, pool: np.ndarray,
                  config: Config, rng: np.random.Generator) -> FullRankingSet | None:
    users = np.array(sorted(set(after["user_id"])), dtype=object)
    if not len(users):
        return None
    if len(users) > config.ranking.eval_max_examples:
        users = np.sort(rng.choice(users, config.ranking.eval_max_examples, replace=False))
    shown = dataset.impressions
    if shown is not None:
        shown = shown[shown["timestamp"] < request_time]
    contexts = query_examples(before, dataset.users, users, request_time, config.data.history_length,
                              config.data.search_history_length, shown)
    future, past = items_by_user(after), items_by_user(before)
    return FullRankingSet(
        contexts=contexts, relevant=[future[u] for u in users], exclude=[past.get(u, frozenset()) for u in users],
        pool=pool, relevant_watch_time=_watch_time_by_user(after, users))


def _watch_time_by_user(events: pd.DataFrame, users: np.ndarray) -> list[dict[str, float]] | None:
    """[U] item -> total known watch time of the user's events with it; None when no event has one."""
    known = events[np.isfinite(events["watch_time"].to_numpy(dtype=np.float64))]
    if known.empty:
        return None
    totals = known.groupby(["user_id", "item_id"])["watch_time"].sum()
    by_user: dict[str, dict[str, float]] = {}
    for (user, item), seconds in totals.items():
        by_user.setdefault(str(user), {})[str(item)] = float(seconds)
    return [by_user.get(str(user), {}) for user in users]


def _user_inputs(examples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: examples[name] for name in USER_INPUT_NAMES}


def _subsample(examples: dict[str, np.ndarray], limit: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows = len(examples[contract.USER_ID])
    if rows <= limit:
        return examples
    keep = np.sort(rng.choice(rows, limit, replace=False))
    return {name: values[keep] for name, values in examples.items()}
