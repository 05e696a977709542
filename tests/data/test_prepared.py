"""load_prepared(): a preprocessed folder whose validation or test split is empty loads like the in-memory path."""

from __future__ import annotations

import pathlib

import pytest

from trainer.config import load_config
from trainer.data.event_stream import FrameEventSource
from trainer.data.prepared import load_prepared
from trainer.data.sources import load_dataset
from trainer.data.splits import temporal_split
from trainer.preprocess import preprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("empty", ["validation", "test"])
def test_an_empty_split_loads(empty: str, tmp_path: pathlib.Path) -> None:
    overrides = {f"data.{empty}_fraction": 0.0}
    config = load_config(ROOT / "tests" / "configs" / "tiny.yaml", overrides)
    dataset = load_dataset(config.data, config.synthetic)
    preprocess(FrameEventSource(dataset.events, "tiny", 1000), dataset.users, dataset.items, config.data,
               tmp_path / "prepared", shard_size=1000)
    prepared = load_prepared(load_config(ROOT / "tests" / "configs" / "tiny.yaml",
                                         {**overrides, "data.prepared_dir": str(tmp_path / "prepared")}))
    expected = temporal_split(dataset.events, config.data.validation_fraction, config.data.test_fraction)
    for split in ("train", "validation", "test"):
        assert len(getattr(prepared.split, split)) == len(getattr(expected, split)), split
        numbers = ["timestamp", "rating", "watch_time"]
        assert (getattr(prepared.split, split)[numbers].dtypes == getattr(expected, split)[numbers].dtypes).all()
    assert getattr(prepared.split, empty).empty
