"""Train / validation / test splits of an event table.

- `temporal_split`: by global time (what serving faces: train on the past, predict the future).
  All events of one timestamp fall on the same side of each boundary.
- `leave_last_out`: the NCF protocol (He et al. 2017): each user's latest event is held out
  and ranked against `num_negatives` sampled items the user never interacted with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

import numpy as np
import pandas as pd

from trainer.data.schema import DataError


@dataclasses.dataclass
class TemporalSplit:
    """Events split by time: train < validation_start <= validation < test_start <= test."""

    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    validation_start: int
    test_start: int


@dataclasses.dataclass
class LeaveLastOut:
    """The NCF split.

    Attributes:
        train: every event but the held-out ones.
        test: one row per user with >= 2 events: their latest event (ties: the largest item id).
        negatives: [len(test), N] object item ids aligned with `test` rows, sampled from the
            training items, never an item the user interacted with, distinct within a row.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    negatives: np.ndarray


def temporal_split(events: pd.DataFrame, validation_fraction: float, test_fraction: float) -> TemporalSplit:
    """Splits at the global time quantiles 1 - validation_fraction - test_fraction and 1 - test_fraction.

    Args:
        events: the event table (contract columns).
        validation_fraction: about this share of the events goes to validation.
        test_fraction: about this share (the latest events) goes to test.

    Raises:
        DataError: the fractions are out of range or the training side would be empty.
    """
    validation_position, test_position = split_positions(len(events), validation_fraction, test_fraction)
    times = np.sort(events["timestamp"].to_numpy())
    test_start = _time_at(times, test_position)
    validation_start = min(_time_at(times, validation_position), test_start)
    stamp = events["timestamp"].to_numpy()
    train = events[stamp < validation_start]
    if train.empty:
        raise DataError(
            f"temporal_split: the training split is empty (all {len(events)} events are at or after "
            f"{validation_start}); lower validation_fraction/test_fraction or provide more distinct timestamps"
        )
    return TemporalSplit(
        train=train.reset_index(drop=True),
        validation=events[(stamp >= validation_start) & (stamp < test_start)].reset_index(drop=True),
        test=events[stamp >= test_start].reset_index(drop=True),
        validation_start=validation_start,
        test_start=test_start,
    )


def split_positions(num_events: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """0-based positions, in time order, of the events at the quantiles 1 - validation - test and 1 - test.

    Raises:
        DataError: a fraction is negative or they sum to 1 or more.
    """
    if validation_fraction < 0 or test_fraction < 0 or validation_fraction + test_fraction >= 1:
        raise DataError(f"temporal_split: fractions must be >= 0 with a sum < 1, got "
                        f"{validation_fraction} and {test_fraction}")
    return (int(np.ceil(num_events * (1.0 - test_fraction - validation_fraction))),
            int(np.ceil(num_events * (1.0 - test_fraction))))


def _time_at(sorted_times: np.ndarray, position: int) -> int:
    """The timestamp at `position` of the events; one past the last event when nothing lies there."""
    if position >= len(sorted_times):
        return int(sorted_times[-1]) + 1
    return int(sorted_times[position])


def leave_last_out(events: pd.DataFrame, num_negatives: int, seed: int) -> LeaveLastOut:
    """Holds out each user's latest event and samples their evaluation negatives.

    Args:
        events: the event table (contract columns).
        num_negatives: N, negatives per held-out event (99 in the NCF paper).
        seed: seeds the negative sampling.

    Raises:
        DataError: some user has fewer than N training items they never interacted with.
    """
    train, test = hold_out_last(events)
    positives = events.groupby("user_id")["item_id"].agg(frozenset)
    negatives = sample_negatives(
        [positives[user] for user in test["user_id"]],
        np.sort(train["item_id"].unique()),
        num_negatives,
        np.random.default_rng(seed),
    )
    return LeaveLastOut(train=train, test=test, negatives=negatives)


def hold_out_last(events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`leave_last_out`'s split without its negatives: (train, test), test holding the latest event
    (ties: the largest item id) of each user with >= 2 events, train the rest in their original order."""
    ordered = events.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
    sizes = ordered.groupby("user_id", sort=False)["item_id"].transform("size").to_numpy()
    is_last = ~ordered["user_id"].duplicated(keep="last").to_numpy()
    held_out = is_last & (sizes >= 2)
    return ordered[~held_out].sort_index().reset_index(drop=True), ordered[held_out].reset_index(drop=True)


def sample_negatives(
    positives_by_user: Sequence[Collection[str]],
    item_ids: Sequence[str] | np.ndarray,
    num: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Uniform samples of `num` distinct items per row, none of them a positive of that row.

    Args:
        positives_by_user: [R] the items to avoid, per row (rows may share one collection object).
        item_ids: [M] the pool to sample from.
        num: negatives per row.
        rng: the random generator.

    Returns:
        [R, num] object array of item ids.

    Raises:
        DataError: a row has fewer than `num` pool items outside its positives.
    """
    pool = np.asarray(item_ids, dtype=object)
    pool_size = len(pool)
    rows = len(positives_by_user)
    blocked, blocked_counts = positive_codes(positives_by_user, pool)
    short = np.flatnonzero(pool_size - blocked_counts < num)
    if len(short):
        row = int(short[0])
        raise DataError(
            f"sample_negatives: row {row} has only {pool_size - int(blocked_counts[row])} candidate negatives "
            f"outside its {int(blocked_counts[row])} positives, {num} needed"
        )
    chosen = np.full((rows, num), -1, dtype=np.int64)
    filled = np.zeros(rows, dtype=np.int64)
    pending = np.arange(rows)
    while len(pending):
        need = num - filled[pending]
        draws = rng.integers(0, pool_size, (len(pending), 2 * int(need.max()) + 8))
        codes = pending[:, None] * pool_size + draws
        already = (draws[:, :, None] == chosen[pending][:, None, :]).any(axis=2)
        valid = ~sorted_contains(blocked, codes) & ~already
        first = np.zeros(codes.size, dtype=bool)
        first[np.unique(codes.ravel(), return_index=True)[1]] = True
        valid &= first.reshape(codes.shape)
        rank = np.cumsum(valid, axis=1)
        keep = valid & (rank <= need[:, None])
        row_index, column = np.nonzero(keep)
        chosen[pending[row_index], filled[pending[row_index]] + rank[row_index, column] - 1] = draws[row_index, column]
        filled[pending] += np.minimum(rank[:, -1], need)
        pending = pending[filled[pending] < num]
    return pool[chosen]


def sorted_contains(sorted_values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Elementwise membership of `queries` in the sorted array `sorted_values`."""
    if not len(sorted_values):
        return np.zeros(queries.shape, dtype=bool)
    position = np.minimum(np.searchsorted(sorted_values, queries), len(sorted_values) - 1)
    return sorted_values[position] == queries


def positive_codes(positives_by_user: Sequence[Collection[str]], pool: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted codes row * M + pool index of every (row, positive) pair, and the count per row."""
    pool_index = pd.Index(pool)
    cache: dict[int, np.ndarray] = {}
    per_row = []
    for positives in positives_by_user:
        key = id(positives)
        if key not in cache:
            found = pool_index.get_indexer(list(positives))
            cache[key] = np.unique(found[found >= 0])
        per_row.append(cache[key])
    counts = np.array([len(p) for p in per_row], dtype=np.int64)
    if not per_row:
        return np.zeros(0, dtype=np.int64), counts
    rows = np.repeat(np.arange(len(per_row)), counts)
    codes = rows * len(pool) + np.concatenate(per_row).astype(np.int64) if counts.sum() else rows
    return np.sort(codes), counts
