"""Examples: a context never contains its own event or anything later (checked against brute force)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recsys_common import contract
from trainer.data.examples import (
    IMPRESSION_HISTORY_LENGTH,
    event_examples,
    example_age,
    impression_examples,
    query_examples,
)
from trainer.data.schema import DataError, validate_events, validate_impressions, validate_users
from trainer.data.vocab import tokenize

H, S = 4, 3


def _random_events(seed: int, n: int = 300) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    queries = np.array([None, None, "red car", "Blue sky, cars!", "jazz"], dtype=object)
    return validate_events(
        pd.DataFrame(
            {
                "user_id": rng.choice(["a", "b", "c", "d", "e"], n),
                "item_id": [f"i{k}" for k in rng.integers(0, 40, n)],
                "timestamp": rng.integers(0, 60, n),  # few distinct times: many ties
                "rating": np.where(rng.random(n) < 0.5, np.nan, rng.integers(1, 6, n)),
                "watch_time": rng.random(n) * 100,
                "query": rng.choice(queries, n),
            }
        ),
        "test",
    )


USERS = validate_users(pd.DataFrame({"user_id": ["a", "b", "c"], "gender": ["F", "M", ""], "age": [30, 0, 45],
                                     "occupation": ["x", "y", "z"], "region": ["1", "2", ""]}), "test")


def _brute_force(pool: pd.DataFrame, user: str, time: int) -> tuple[list[str], list[str]]:
    """Padded watch and search histories from the events of `user` strictly before `time`."""
    earlier = pool[(pool["user_id"] == user) & (pool["timestamp"] < time)]
    earlier = earlier.iloc[np.argsort(earlier["timestamp"].to_numpy(), kind="stable")]
    watched = list(earlier["item_id"])[-H:]
    tokens = [t for q in earlier["query"] if isinstance(q, str) for t in tokenize(q)][-S:]
    return [""] * (H - len(watched)) + watched, [""] * (S - len(tokens)) + tokens


@pytest.mark.parametrize("seed", [0, 1])
def test_event_examples_match_brute_force(seed: int) -> None:
    events = _random_events(seed)
    features = event_examples(events, USERS, H, S)
    assert features[contract.WATCH_HISTORY].shape == (len(events), H)
    assert features[contract.SEARCH_HISTORY].shape == (len(events), S)
    for row in range(len(events)):
        event = events.iloc[row]
        watched, searched = _brute_force(events, event["user_id"], event["timestamp"])
        assert list(features[contract.WATCH_HISTORY][row]) == watched, row
        assert list(features[contract.SEARCH_HISTORY][row]) == searched, row
    np.testing.assert_array_equal(features[contract.REQUEST_TIME], events["timestamp"].to_numpy())
    np.testing.assert_array_equal(features["item_id"], events["item_id"].to_numpy())
    np.testing.assert_array_equal(features["rating"], events["rating"].to_numpy(dtype=np.float32))
    assert features["watch_time"].dtype == np.float32 and features[contract.AGE].dtype == np.int64


def test_history_events_extend_the_context_without_leaking_the_future() -> None:
    events = _random_events(2)
    cut = int(events["timestamp"].quantile(0.7))
    past, future = events[events["timestamp"] < cut], events[events["timestamp"] >= cut]
    features = event_examples(future, USERS, H, S, history_events=events)  # `future` overlaps: no double counting
    for row in range(len(future)):
        event = future.iloc[row]
        watched, searched = _brute_force(events, event["user_id"], event["timestamp"])
        assert list(features[contract.WATCH_HISTORY][row]) == watched
        assert list(features[contract.SEARCH_HISTORY][row]) == searched
    only_past = event_examples(future, USERS, H, S, history_events=past)
    np.testing.assert_array_equal(only_past[contract.WATCH_HISTORY], features[contract.WATCH_HISTORY])


def test_demographics_and_unknown_users() -> None:
    events = _random_events(3)
    features = event_examples(events, USERS, H, S)
    expected = USERS.set_index("user_id").reindex(events["user_id"])
    np.testing.assert_array_equal(features[contract.GENDER], expected["gender"].fillna("").to_numpy(dtype=object))
    np.testing.assert_array_equal(features[contract.AGE], expected["age"].fillna(0).to_numpy(dtype=np.int64))
    unknown = features[contract.USER_ID] == "e"  # user e is not in the user table
    assert unknown.any() and (features[contract.REGION][unknown] == "").all()


def test_query_examples_use_the_whole_history() -> None:
    events = _random_events(4)
    features = query_examples(events, USERS, ["b", "nobody"], request_time=1234, history_length=H,
                              search_history_length=S)
    watched, searched = _brute_force(events, "b", np.iinfo(np.int64).max)
    assert list(features[contract.WATCH_HISTORY][0]) == watched
    assert list(features[contract.SEARCH_HISTORY][0]) == searched
    assert list(features[contract.WATCH_HISTORY][1]) == [""] * H
    assert list(features[contract.REQUEST_TIME]) == [1234, 1234]
    assert features[contract.GENDER][0] == "M" and features[contract.GENDER][1] == ""
    assert set(features) == {spec.name for spec in contract.USER_INPUTS + contract.RANKING_CONTEXT_INPUTS}


def test_example_age() -> None:
    ages = example_age(np.array([100, 150, 200, 250]), t_max=200, t_span=100)
    np.testing.assert_allclose(ages, [1.0, 0.5, 0.0, 0.0])
    assert ages.dtype == np.float32
    with pytest.raises(DataError, match="t_span"):
        example_age(np.array([1]), t_max=1, t_span=0)


def test_history_length_must_be_positive() -> None:
    with pytest.raises(DataError, match="history_length"):
        event_examples(_random_events(0), USERS, 0, S)


@pytest.mark.parametrize("seed", [0, 1])
def test_impression_examples_carry_watch_times_and_earlier_impressions(seed: int) -> None:
    rng = np.random.default_rng(seed)
    events = _random_events(seed)
    n = 200
    impressions = validate_impressions(pd.DataFrame({
        "user_id": rng.choice(["a", "b", "c", "x"], n), "item_id": [f"i{k}" for k in rng.integers(0, 40, n)],
        "timestamp": rng.integers(0, 60, n), "clicked": rng.random(n) < 0.3}), "test")
    features = impression_examples(impressions, events, USERS, H, S)
    assert features[contract.IMPRESSION_HISTORY].shape == (n, IMPRESSION_HISTORY_LENGTH)
    for row in range(n):
        shown = impressions.iloc[row]
        user, time = shown["user_id"], shown["timestamp"]
        watched, _ = _brute_force(events, user, time)
        assert list(features[contract.WATCH_HISTORY][row]) == watched, row
        earlier = events[(events["user_id"] == user) & (events["timestamp"] < time)]
        times = list(earlier["timestamp"].sort_values(kind="stable"))[-H:]
        assert list(features[contract.WATCH_HISTORY_TIMES][row]) == [0] * (H - len(times)) + times, row
        before = impressions[(impressions["user_id"] == user) & (impressions["timestamp"] < time)]
        items = list(before["item_id"])[-IMPRESSION_HISTORY_LENGTH:]
        expected = [""] * (IMPRESSION_HISTORY_LENGTH - len(items)) + items
        assert list(features[contract.IMPRESSION_HISTORY][row]) == expected, row
    np.testing.assert_array_equal(features["clicked"], impressions["clicked"].to_numpy())
    assert features[contract.LANGUAGE].tolist() == [""] * n  # USERS has no languages
