"""tf.data pipelines over feature dicts."""

from __future__ import annotations

import numpy as np
import pytest

import trainer  # noqa: F401  (sets the Keras version before TensorFlow loads)
from trainer.data.pipeline import AGE_BUCKETS, make_dataset
from trainer.data.schema import DataError

FEATURES = {
    "user_id": np.array([f"u{k}" for k in range(10)], dtype=object),
    "watch_history": np.array([[f"i{k}", ""] for k in range(10)], dtype=object),
    "age": np.arange(10, dtype=np.int64),
    "watch_time": np.linspace(0, 1, 10, dtype=np.float32),
}


def _epoch(dataset) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(v) for batch in dataset for v in batch["age"].numpy()]


def test_unshuffled_batches_keep_order_and_types() -> None:
    dataset = make_dataset(FEATURES, batch_size=4, shuffle=False, seed=0)
    batches = list(dataset)
    assert [len(b["age"]) for b in batches] == [4, 4, 2]
    assert batches[0]["watch_history"].shape == (4, 2) and batches[0]["user_id"].dtype.name == "string"
    assert batches[2]["user_id"].numpy().tolist() == [b"u8", b"u9"]
    assert _epoch(dataset) == list(range(10))


def test_shuffle_changes_order_every_epoch_and_keeps_rows_together() -> None:
    dataset = make_dataset(FEATURES, batch_size=3, shuffle=True, seed=1)
    first, second = _epoch(dataset), _epoch(dataset)
    assert sorted(first) == list(range(10)) and sorted(second) == list(range(10))
    assert first != second
    for batch in dataset:
        ages = batch["age"].numpy()
        assert [u.decode() for u in batch["user_id"].numpy()] == [f"u{a}" for a in ages]


def test_repeat() -> None:
    dataset = make_dataset(FEATURES, batch_size=5, shuffle=False, seed=0, repeat=True)
    assert len(list(dataset.take(5))) == 5


@pytest.mark.parametrize(("features", "batch_size"), [
    ({"a": np.zeros(3), "b": np.zeros(4)}, 2),
    ({}, 2),
    ({"a": np.zeros(3)}, 0),
])
def test_bad_input_is_rejected(features: dict, batch_size: int) -> None:
    with pytest.raises(DataError):
        make_dataset(features, batch_size=batch_size, shuffle=False, seed=0)


def test_age_buckets_separate_unknown_and_ml1m_codes() -> None:
    codes = np.array([0, 1, 18, 25, 35, 45, 50, 56])  # 0 = unknown, then ml-1m's age codes
    buckets = np.searchsorted(np.array(AGE_BUCKETS), codes, side="right")
    assert len(set(buckets.tolist())) == len(codes) and buckets[0] == 0
