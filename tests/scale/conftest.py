"""Fixtures of the scale tests: the tiny synthetic run, its data as CSV files, feature comparisons."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from trainer.config import Config, load_config
from trainer.data import bundle
from trainer.data.table_csv import write_items, write_users

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"


@pytest.fixture(scope="session")
def tiny_config() -> Config:
    return load_config(TINY_CONFIG)


@pytest.fixture(scope="session")
def tiny_data(tiny_config: Config) -> bundle.TrainingData:
    return bundle.prepare(tiny_config)


@pytest.fixture(scope="session")
def tiny_csv(tiny_data: bundle.TrainingData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The tiny dataset's tables as the CSV files `python -m trainer.preprocess --events ...` reads."""
    folder = tmp_path_factory.mktemp("tiny_csv")
    paths = {name: folder / f"{name}.csv" for name in ("events", "users", "items")}
    tiny_data.dataset.events.to_csv(paths["events"], index=False)
    write_users(tiny_data.dataset.users, paths["users"])
    write_items(tiny_data.dataset.items, paths["items"])
    return paths


def as_numpy(features: dict[str, object]) -> dict[str, np.ndarray]:
    """Tensors or arrays -> NumPy, with bytes decoded to str (object arrays), like `event_examples` returns."""
    out = {}
    for name, values in features.items():
        array = np.asarray(values)
        if array.dtype.kind in "SO":
            array = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
        out[name] = array
    return out


def assert_same_features(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> None:
    """Every feature of `expected` equal in `actual` (same rows, same order; NaN equals NaN)."""
    assert set(expected) <= set(actual), f"missing {set(expected) - set(actual)}"
    for name, want in expected.items():
        got = actual[name]
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        if want.dtype == object:
            mismatch = np.flatnonzero((got.astype(object) != want).reshape(len(want), -1).any(axis=1))
            assert not len(mismatch), f"{name}: row {mismatch[0]}: {got[mismatch[0]]!r} != {want[mismatch[0]]!r}"
        else:
            assert got.dtype == want.dtype, f"{name}: dtype {got.dtype} != {want.dtype}"
            np.testing.assert_array_equal(got, want, err_msg=name)


def concat_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([batch[name] for batch in batches]) for name in batches[0]}


@pytest.fixture(scope="session")
def tiny_retrieval(tiny_config: Config, tiny_data: bundle.TrainingData,
                   tmp_path_factory: pytest.TempPathFactory) -> object:
    """The retrieval model trained on the tiny config (a `RetrievalResult`)."""
    from trainer.retrieval.train import train_retrieval
    from trainer.run import RunContext

    return train_retrieval(tiny_config, tiny_data, RunContext(tmp_path_factory.mktemp("retrieval_run")))


@pytest.fixture(scope="session")
def tiny_prepared(tiny_config: Config, tiny_data: bundle.TrainingData,
                  tmp_path_factory: pytest.TempPathFactory) -> object:
    """The tiny dataset preprocessed into TFRecord shards of 500 records (a `Manifest`)."""
    from trainer.data.event_stream import FrameEventSource
    from trainer.preprocess import preprocess

    dataset = tiny_data.dataset
    return preprocess(FrameEventSource(dataset.events, "tiny", 1000), dataset.users, dataset.items,
                      tiny_config.data, tmp_path_factory.mktemp("prepared") / "out", shard_size=500)
