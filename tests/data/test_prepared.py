"""load_prepared(): a preprocessed folder holds the same data as the in-memory path (`bundle.prepare`)."""

from __future__ import annotations

import pathlib

import numpy as np
import pandas as pd
import pytest

from trainer.config import Config, load_config
from trainer.data.bundle import TrainingData, prepare
from trainer.data.event_stream import FrameEventSource
from trainer.data.prepared import load_prepared
from trainer.data.sources import load_dataset
from trainer.preprocess import preprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
EVENT_COLUMNS = ["user_id", "item_id", "timestamp", "rating", "watch_time"]


def _both_paths(overrides: dict[str, object], folder: pathlib.Path) -> tuple[TrainingData, TrainingData]:
    config: Config = load_config(TINY, overrides)
    dataset = load_dataset(config.data, config.synthetic)
    preprocess(FrameEventSource(dataset.events, "tiny", 1000), dataset.users, dataset.items, config.data,
               folder, shard_size=1000)
    prepared = load_prepared(load_config(TINY, {**overrides, "data.prepared_dir": str(folder)}))
    return prepare(config), prepared


def _assert_same_examples(expected: dict[str, np.ndarray], actual: dict[str, np.ndarray], split: str) -> None:
    assert set(actual) == set(expected), split
    for name, values in expected.items():
        np.testing.assert_array_equal(actual[name], values, err_msg=f"{split}: {name}")


@pytest.mark.parametrize("overrides", [{}, {"data.validation_fraction": 0.0}, {"data.test_fraction": 1e-9}],
                         ids=["three-splits", "no-validation", "no-test"])
def test_prepared_folder_holds_the_in_memory_data(overrides: dict[str, object], tmp_path: pathlib.Path) -> None:
    in_memory, prepared = _both_paths(overrides, tmp_path / "prepared")

    assert (prepared.t_max, prepared.t_span) == (in_memory.t_max, in_memory.t_span)
    assert prepared.vocab == in_memory.vocab
    for split in ("validation", "test"):
        _assert_same_examples(getattr(in_memory, f"{split}_examples"), getattr(prepared, f"{split}_examples"), split)
    for split in ("train", "validation", "test"):
        expected = getattr(in_memory.split, split)[EVENT_COLUMNS].reset_index(drop=True)
        actual = getattr(prepared.split, split)[EVENT_COLUMNS].reset_index(drop=True)
        pd.testing.assert_frame_equal(actual, expected, check_dtype=True, obj=split)
