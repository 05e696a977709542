"""ContextStream and ImpressionContextStream: chunk-by-chunk examples equal the whole log's, with bounded state."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from trainer.data.examples import IMPRESSION_HISTORY_LENGTH, event_examples, impression_examples
from trainer.data.schema import (
    DataError,
    events_from_impressions,
    validate_events,
    validate_impressions,
    validate_users,
)
from trainer.data.streaming_examples import ContextStream, ImpressionContextStream, carried_events, time_slices
from trainer.data.vocab import tokenize

from .conftest import assert_same_features

H, S = 3, 4
USERS = validate_users(pd.DataFrame({"user_id": ["a", "b", "c"], "gender": ["F", "M", ""], "age": [30, 0, 45],
                                     "occupation": ["x", "y", "z"], "region": ["1", "2", ""]}), "test")


def _log(seed: int, n: int = 400, distinct_times: int = 40) -> pd.DataFrame:
    """A time-ordered log with many events per second (ties) and multi-word queries, some long ago."""
    rng = np.random.default_rng(seed)
    queries = np.array([None, None, None, "red car", "Blue sky, cars and jazz!", "one two three four five"],
                       dtype=object)
    return validate_events(pd.DataFrame({
        "user_id": rng.choice(["a", "b", "c", "d"], n),
        "item_id": [f"i{k}" for k in rng.integers(0, 30, n)],
        "timestamp": np.sort(rng.integers(0, distinct_times, n)),
        "rating": np.where(rng.random(n) < 0.5, np.nan, rng.integers(1, 6, n)),
        "watch_time": rng.random(n) * 100,
        "query": rng.choice(queries, n),
    }), "test")


def _streamed(log: pd.DataFrame, chunk_size: int) -> dict[str, np.ndarray]:
    stream = ContextStream(USERS, H, S)
    parts = [stream.examples(log.iloc[start:start + chunk_size]) for start in range(0, len(log), chunk_size)]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


@pytest.mark.parametrize("chunk_size", [1, 2, 7, 64, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_chunked_examples_equal_whole_log(seed: int, chunk_size: int) -> None:
    log = _log(seed)
    assert_same_features(_streamed(log, chunk_size), event_examples(log, USERS, H, S))


def test_same_second_events_split_across_chunks_do_not_see_each_other() -> None:
    # User a: x at t=1, then y, z, w all at t=5 (one per chunk), then v at t=6.
    log = validate_events(pd.DataFrame({"user_id": ["a"] * 5, "item_id": ["x", "y", "z", "w", "v"],
                                        "timestamp": [1, 5, 5, 5, 6], "query": ["q1", None, "q2", None, None]}), "t")
    got = _streamed(log, 1)
    assert got["watch_history"].tolist() == [["", "", ""], ["", "", "x"], ["", "", "x"], ["", "", "x"],
                                             ["y", "z", "w"]]
    assert got["search_history"][3].tolist() == ["", "", "", "q1"]
    assert got["search_history"][4].tolist() == ["", "", "q1", "q2"]


def test_old_search_tokens_are_kept_beyond_the_watch_history() -> None:
    # The only query is 10 events back: far beyond H, still within the last S tokens.
    log = validate_events(pd.DataFrame({"user_id": ["a"] * 12, "item_id": [f"i{k}" for k in range(12)],
                                        "timestamp": range(12), "query": ["old news"] + [None] * 11}), "t")
    got = _streamed(log, 3)
    assert got["search_history"][-1].tolist() == ["", "", "old", "news"]
    assert got["watch_history"][-1].tolist() == ["i8", "i9", "i10"]


def test_carried_state_is_bounded_by_users_times_history() -> None:
    log = _log(3, n=3000, distinct_times=3000)  # few ties: the bound is users x (H + S)
    stream = ContextStream(USERS, H, S)
    largest = 0
    for start in range(0, len(log), 100):
        stream.examples(log.iloc[start:start + 100])
        largest = max(largest, stream.carried_events)
    users = log["user_id"].nunique()
    assert largest <= users * (H + S) + 4  # + the events of the chunk's last second
    assert largest >= users * H  # it does keep every user's last H


def test_carried_events_keeps_exactly_what_later_contexts_use() -> None:
    pool = validate_events(pd.DataFrame({
        "user_id": ["a"] * 6 + ["b"],
        "item_id": ["i0", "i1", "i2", "i3", "i4", "i5", "j0"],
        "timestamp": [0, 1, 2, 3, 4, 9, 9],
        "query": ["alpha beta gamma", None, "delta", None, None, "late", None],
    }), "t")
    kept = carried_events(pool, last_time=9, history_length=2, search_history_length=3)
    # a: last 2 before t=9 (i3, i4), the tokens delta + 2 of "alpha beta gamma" (i0, i2), and everything at 9.
    assert kept["item_id"].tolist() == ["i0", "i2", "i3", "i4", "i5", "j0"]
    tokens = [t for q in kept["query"].dropna() for t in tokenize(q)]
    assert tokens == ["alpha", "beta", "gamma", "delta", "late"]


def test_a_chunk_from_the_past_is_an_error() -> None:
    log = _log(0, n=50)
    stream = ContextStream(USERS, H, S)
    stream.examples(log.iloc[25:])
    with pytest.raises(DataError, match="before the previous chunk's last event"):
        stream.examples(log.iloc[:25])


def test_an_event_logged_twice_across_a_chunk_boundary_stays_twice_in_history() -> None:
    log = validate_events(pd.DataFrame({"user_id": ["a"] * 4, "item_id": ["w", "x", "x", "y"],
                                        "timestamp": [1, 5, 5, 6]}), "t")
    got = _streamed(log, 2)  # chunks [w, x] and [x, y]: the second x repeats a carried event
    assert got["watch_history"][-1].tolist() == ["w", "x", "x"]
    assert_same_features(got, event_examples(log, USERS, H, S))


def _impression_log(seed: int, n: int = 1200, distinct_times: int = 60) -> pd.DataFrame:
    """Slates shown to four users, many per second; the clicked rows are the watches."""
    rng = np.random.default_rng(seed)
    clicked = rng.random(n) < 0.3
    return validate_impressions(pd.DataFrame({
        "user_id": rng.choice(["a", "b", "c", "d"], n), "item_id": [f"i{k}" for k in rng.integers(0, 30, n)],
        "timestamp": np.sort(rng.integers(0, distinct_times, n)), "clicked": clicked,
        "watch_time": np.where(clicked, rng.random(n) * 100, 0.0)}), "test")


def _chunks(table: pd.DataFrame, size: int) -> Iterator[pd.DataFrame]:
    return (table.iloc[start:start + size].reset_index(drop=True) for start in range(0, len(table), size))


@pytest.mark.parametrize(("event_chunk", "impression_chunk"), [(1, 1), (5, 50), (64, 7), (10_000, 3)])
def test_time_slices_cut_both_streams_at_common_times(event_chunk: int, impression_chunk: int) -> None:
    shown = _impression_log(0)
    events = events_from_impressions(shown, "test")
    slices = list(time_slices(_chunks(events, event_chunk), _chunks(shown, impression_chunk)))
    for (earlier_events, earlier_shown), (later_events, later_shown) in zip(slices, slices[1:]):
        last = max([*earlier_events["timestamp"], *earlier_shown["timestamp"]])
        assert min([*later_events["timestamp"], *later_shown["timestamp"]]) > last
    pd.testing.assert_frame_equal(pd.concat([part for part, _ in slices], ignore_index=True), events)
    pd.testing.assert_frame_equal(pd.concat([part for _, part in slices], ignore_index=True), shown)


@pytest.mark.parametrize("chunk_size", [3, 40, 5000])
def test_sliced_impression_examples_equal_the_whole_log(chunk_size: int) -> None:
    shown = _impression_log(1)
    events = events_from_impressions(shown, "test")
    stream = ImpressionContextStream(USERS, H, S)
    parts = [stream.examples(watched, impressions)
             for watched, impressions in time_slices(_chunks(events, chunk_size), _chunks(shown, chunk_size))]
    got_events = {name: np.concatenate([p[0][name] for p in parts if p[0]]) for name in parts[0][0]}
    got_shown = {name: np.concatenate([p[1][name] for p in parts if p[1]]) for name in parts[0][1]}
    assert_same_features(got_events, event_examples(events, USERS, H, S, impressions=shown))
    assert_same_features(got_shown, impression_examples(shown, events, USERS, H, S))
    assert got_shown["impression_history"].shape == (len(shown), IMPRESSION_HISTORY_LENGTH)


def test_carried_impressions_are_bounded_by_users_times_histories() -> None:
    shown = _impression_log(2, n=6000, distinct_times=6000)
    events = events_from_impressions(shown, "test")
    stream = ImpressionContextStream(USERS, H, S)
    largest = 0
    for watched, impressions in time_slices(_chunks(events, 100), _chunks(shown, 100)):
        stream.examples(watched, impressions)
        largest = max(largest, stream.carried_rows)
    users = shown["user_id"].nunique()
    assert users * IMPRESSION_HISTORY_LENGTH <= largest <= users * (H + S + IMPRESSION_HISTORY_LENGTH) + 8


def test_a_slice_that_overlaps_the_last_is_an_error() -> None:
    shown = _impression_log(3, n=100)
    events = events_from_impressions(shown, "test")
    stream = ImpressionContextStream(USERS, H, S)
    stream.examples(events.iloc[len(events) // 2:], shown.iloc[:0])
    with pytest.raises(DataError, match="not after the previous slice's last row"):
        stream.examples(events.iloc[:0], shown)
