"""Temporal and leave-last-out splits, and negative sampling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.data.schema import DataError, Dataset, validate_events
from trainer.data.splits import leave_last_out, sample_negatives, temporal_split


@pytest.mark.parametrize(("validation", "test"), [(0.1, 0.1), (0.2, 0.05), (0.0, 0.3), (0.25, 0.0)])
def test_temporal_split_respects_time(small_synthetic: Dataset, validation: float, test: float) -> None:
    events = small_synthetic.events
    split = temporal_split(events, validation, test)
    assert len(split.train) + len(split.validation) + len(split.test) == len(events)
    assert (split.train["timestamp"] < split.validation_start).all()
    assert (split.validation["timestamp"] >= split.validation_start).all()
    assert (split.validation["timestamp"] < split.test_start).all()
    assert (split.test["timestamp"] >= split.test_start).all()
    assert abs(len(split.test) / len(events) - test) < 0.01
    assert abs(len(split.validation) / len(events) - validation) < 0.01
    rebuilt = pd.concat([split.train, split.validation, split.test]).sort_values(["timestamp", "user_id", "item_id"])
    expected = events.sort_values(["timestamp", "user_id", "item_id"])
    pd.testing.assert_frame_equal(rebuilt.reset_index(drop=True), expected.reset_index(drop=True))


def test_events_of_one_second_stay_together() -> None:
    events = validate_events(
        pd.DataFrame({"user_id": list("abcdefghij"), "item_id": ["x"] * 10,
                      "timestamp": [1, 2, 3, 4, 5, 6, 7, 8, 8, 8]}),
        "test",
    )
    split = temporal_split(events, 0.1, 0.1)
    assert split.test_start == 8 and len(split.test) == 3  # the 10% quantile falls inside the tie at t=8
    assert split.validation_start == 8 and split.validation.empty
    assert (split.train["timestamp"] < 8).all() and len(split.train) == 7


def test_temporal_split_needs_training_events() -> None:
    events = validate_events(
        pd.DataFrame({"user_id": list("abc"), "item_id": list("xyz"), "timestamp": [5, 5, 5]}), "t")
    with pytest.raises(DataError, match="training split is empty"):
        temporal_split(events, 0.4, 0.4)


def _events_with_ties() -> pd.DataFrame:
    rows = [
        ("u1", "i1", 10), ("u1", "i2", 20), ("u1", "i3", 30),
        ("u2", "i4", 15), ("u2", "i2", 40), ("u2", "i9", 40),  # tie at the end: the larger item id is held out
        ("u3", "i1", 12),  # a single event: train only
    ] + [(f"u{n}", f"i{k}", 100 + k) for n in range(4, 8) for k in range(4, 9)]
    return validate_events(pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]), "test")


def test_leave_last_out_holds_out_each_users_latest_event() -> None:
    events = _events_with_ties()
    split = leave_last_out(events, num_negatives=2, seed=0)
    held = split.test.set_index("user_id")["item_id"]
    assert held["u1"] == "i3" and held["u2"] == "i9" and "u3" not in held.index
    assert split.test["user_id"].is_unique and len(split.test) == events["user_id"].nunique() - 1
    latest = events.groupby("user_id")["timestamp"].max()
    assert (split.test["timestamp"].to_numpy() == latest.loc[split.test["user_id"]].to_numpy()).all()
    assert len(split.train) + len(split.test) == len(events)
    assert "u3" in set(split.train["user_id"])


def test_leave_last_out_negatives(small_synthetic: Dataset) -> None:
    split = leave_last_out(small_synthetic.events, num_negatives=30, seed=3)
    positives = small_synthetic.events.groupby("user_id")["item_id"].agg(set)
    training_items = set(split.train["item_id"])
    assert split.negatives.shape == (len(split.test), 30)
    for user, row in zip(split.test["user_id"], split.negatives):
        assert len(set(row)) == 30
        assert not set(row) & positives[user]
        assert set(row) <= training_items
    again = leave_last_out(small_synthetic.events, num_negatives=30, seed=3)
    np.testing.assert_array_equal(again.negatives, split.negatives)
    other = leave_last_out(small_synthetic.events, num_negatives=30, seed=4)
    assert (other.negatives != split.negatives).any()


def test_sample_negatives_is_uniform_over_allowed_items() -> None:
    pool = np.array([f"i{k}" for k in range(10)], dtype=object)
    blocked = {"i0", "i3", "i7"}
    rows = [blocked] * 3000
    negatives = sample_negatives(rows, pool, 4, np.random.default_rng(0))
    counts = pd.Series(negatives.ravel()).value_counts()
    assert set(counts.index) == set(pool) - blocked
    expected = negatives.size / 7
    assert (np.abs(counts.to_numpy() - expected) < 0.05 * expected).all(), counts
    assert all(len(set(row)) == 4 for row in negatives)


def test_sample_negatives_fails_when_a_row_has_too_few_candidates() -> None:
    pool = np.array(["a", "b", "c", "d"], dtype=object)
    with pytest.raises(DataError, match="row 1 has only 1 candidate"):
        sample_negatives([{"a"}, {"a", "b", "c"}], pool, 2, np.random.default_rng(0))
