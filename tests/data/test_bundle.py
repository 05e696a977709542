"""prepare(): the data every stage receives, on the tiny test config and on real ml-100k."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recsys_common import contract
from trainer.config import ConfigError, load_config
from trainer.data.bundle import TrainingData, prepare

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny() -> TrainingData:
    return prepare(load_config(ROOT / "tests" / "configs" / "tiny.yaml"))


def test_tiny_bundle_is_consistent(tiny: TrainingData) -> None:
    split = tiny.split
    assert set(tiny.vocab.item_ids) == set(split.train["item_id"])
    assert set(tiny.vocab.user_ids) == set(split.train["user_id"])
    assert list(tiny.catalog.item_ids) == list(tiny.dataset.items["item_id"])
    assert tiny.t_max == split.train["timestamp"].max()
    assert tiny.t_span == tiny.t_max - split.train["timestamp"].min() > 0
    for examples, events in ((tiny.train_examples, split.train), (tiny.validation_examples, split.validation),
                             (tiny.test_examples, split.test)):
        assert len(examples["item_id"]) == len(events)
        assert examples[contract.WATCH_HISTORY].shape == (len(events), tiny.history_length)
        assert examples[contract.SEARCH_HISTORY].shape == (len(events), tiny.search_history_length)
    assert tiny.available_features == tiny.dataset.available()
    assert "rating" not in tiny.available_features and "query" in tiny.available_features


def test_test_contexts_see_validation_events(tiny: TrainingData) -> None:
    """The test contexts use every earlier event as history, not only the training split."""
    test = tiny.split.test
    first = (test["timestamp"] == test.groupby("user_id")["timestamp"].transform("min")).to_numpy()
    latest_validation = tiny.split.validation.groupby("user_id")["item_id"].last()
    users = test["user_id"].to_numpy()[first]
    seen_in_validation = np.isin(users, latest_validation.index)
    assert seen_in_validation.sum() >= 10
    last_watched = tiny.test_examples[contract.WATCH_HISTORY][first][seen_in_validation, -1]
    np.testing.assert_array_equal(last_watched, latest_validation.loc[users[seen_in_validation]].to_numpy())


def test_default_configs_load() -> None:
    default = load_config(ROOT / "configs" / "default.yaml")
    assert default.data.source == "synthetic" and default.synthetic.num_users == 2000
    tiny = load_config(ROOT / "tests" / "configs" / "tiny.yaml")
    assert tiny.synthetic.num_users == 200 and tiny.retrieval.epochs <= 2
    assert load_config(ROOT / "configs" / "movielens-100k.yaml").data.data_dir == "../shared/data/ml-100k"
    assert load_config(ROOT / "configs" / "movielens-1m.yaml").data.source == "ml-1m"


def test_synthetic_config_is_validated() -> None:
    with pytest.raises(ConfigError, match="synthetic.events_per_user"):
        load_config(None, {"synthetic.events_per_user": 600, "synthetic.num_items": 1000})
    with pytest.raises(ConfigError, match="synthetic.temperature"):
        load_config(None, {"synthetic.temperature": 0.0})


def test_ml100k_bundle(ml100k_dir: Path) -> None:
    config = load_config(ROOT / "configs" / "movielens-100k.yaml", {"data.data_dir": str(ml100k_dir)})
    data = prepare(config)
    assert len(data.dataset.events) == 100_000
    assert len(data.split.test) == pytest.approx(10_000, rel=0.01)
    assert {"rating", "watch_time", "age", "gender", "region", "genres"} <= data.available_features
    assert "query" not in data.available_features
    np.testing.assert_allclose(data.train_examples["watch_time"], data.train_examples["rating"] / 5, rtol=1e-6)
