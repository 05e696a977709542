"""Streaming preprocessing of a log with impressions: event and impression records equal the in-memory examples."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from trainer import preprocess as preprocess_cli
from trainer.config import Config, load_config
from trainer.data.bundle import TrainingData, prepare
from trainer.data.event_stream import (
    ClickedEventSource,
    CsvEventSource,
    CsvImpressionSource,
    EventChunk,
    EventSource,
    FrameEventSource,
    FrameImpressionSource,
)
from trainer.data.examples import CLICKED, IMPRESSION_HISTORY_LENGTH, impression_examples
from trainer.data.record_logs import open_log, write_records
from trainer.data.schema import DataError
from trainer.data.table_csv import write_items, write_users
from trainer.data.tfrecord import EVENTS, IMPRESSIONS, SPLITS, Manifest
from trainer.preprocess import preprocess

from .conftest import TINY_CONFIG, as_numpy, assert_same_features, concat_batches

WORLD = {"synthetic.slate_size": 6, "synthetic.clickbait_fraction": 0.1, "synthetic.freshness_days": 2.0,
         "synthetic.num_channels": 10, "synthetic.num_languages": 3}


@pytest.fixture(scope="module")
def world_config() -> Config:
    return load_config(TINY_CONFIG, WORLD)


@pytest.fixture(scope="module")
def world(world_config: Config) -> TrainingData:
    return prepare(world_config)


@pytest.fixture(scope="module")
def world_csv(world: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """The world's tables as CSV files; the event log in a folder of its own, so that the other folder is
    `data.source: logs` with impressions only."""
    folder = tmp_path_factory.mktemp("world_csv")
    paths = {name: folder / f"{name}.csv" for name in ("impressions", "users", "items")}
    paths["events"] = tmp_path_factory.mktemp("world_events") / "events.csv"
    world.dataset.events.to_csv(paths["events"], index=False)
    shown = world.dataset.impressions
    assert shown is not None
    shown.assign(clicked=shown["clicked"].astype(int)).to_csv(paths["impressions"], index=False)
    write_users(world.dataset.users, paths["users"])
    write_items(world.dataset.items, paths["items"])
    paths["impression_records"] = write_records(shown, paths["events"].parent / "impressions.tfrecord.gz")
    paths["event_records"] = write_records(world.dataset.events, paths["events"].parent / "events.tfrecord")
    return paths


def _read_all(manifest: Manifest, split: str, kind: str) -> dict[str, np.ndarray]:
    features = as_numpy(concat_batches(list(manifest.read(split, 97, kind).as_numpy_iterator())))
    if kind == IMPRESSIONS:
        features[CLICKED] = features[CLICKED].astype(bool)
    return features


def _sources(world: TrainingData, paths: dict[str, pathlib.Path], layout: str, chunk_size: int
             ) -> tuple[EventSource, EventSource]:
    """(events, impressions) as `python -m trainer.preprocess` opens them for each way of giving the logs."""
    dataset = world.dataset
    assert dataset.impressions is not None
    if layout == "frames":
        return (FrameEventSource(dataset.events, "events", chunk_size),
                FrameImpressionSource(dataset.impressions, "impressions", chunk_size + 17))
    if layout == "records-both":
        return open_log(paths["event_records"], False, chunk_size), open_log(paths["impression_records"], True, 555)
    impressions = CsvImpressionSource(paths["impressions"], chunk_size)
    if layout == "csv-both":
        return CsvEventSource(paths["events"], chunk_size + 31), impressions
    return ClickedEventSource(impressions), impressions


@pytest.mark.parametrize(("layout", "chunk_size"), [("frames", 250), ("csv-both", 1000), ("csv-impressions", 777),
                                                    ("csv-impressions", 100_000), ("records-both", 400)])
def test_streamed_records_equal_the_in_memory_examples(world_config: Config, world: TrainingData,
                                                       world_csv: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                                       layout: str, chunk_size: int) -> None:
    events, impressions = _sources(world, world_csv, layout, chunk_size)
    if layout == "csv-impressions":  # the in-memory path of the same files: watches without their queries
        world = prepare(load_config(TINY_CONFIG, {"data.source": "logs",
                                                  "data.data_dir": str(world_csv["impressions"].parent)}))
    preprocess(events, world.dataset.users, world.dataset.items, world_config.data, tmp_path / "out",
               shard_size=3000, impressions=impressions)
    manifest = Manifest.load(tmp_path / "out")

    assert manifest.impression_history_length == IMPRESSION_HISTORY_LENGTH
    assert manifest.available_features == world.available_features
    in_memory = {"train": world.train_examples, "validation": world.validation_examples, "test": world.test_examples}
    shown = world.dataset.impressions
    assert shown is not None
    every_impression = impression_examples(shown, world.dataset.events, world.dataset.users,
                                           world_config.data.history_length, world_config.data.search_history_length)
    times = every_impression["request_time"]
    split_of = np.where(times < manifest.validation_start, 0, np.where(times < manifest.test_start, 1, 2))
    for index, split in enumerate(SPLITS):
        assert_same_features(_read_all(manifest, split, EVENTS), in_memory[split])
        expected = {name: values[split_of == index] for name, values in every_impression.items()}
        assert_same_features(_read_all(manifest, split, IMPRESSIONS), expected)
        assert manifest.examples(split, IMPRESSIONS) == int((split_of == index).sum()) > 0


@dataclasses.dataclass
class _CountedReads:
    """An event source that counts how many times it is read."""

    source: EventSource
    reads: int = 0

    @property
    def name(self) -> str:
        return self.source.name

    def chunks(self) -> Iterator[EventChunk]:
        self.reads += 1
        yield from self.source.chunks()


@pytest.mark.parametrize("with_events", [False, True], ids=["impressions-alone", "beside-events"])
def test_each_log_is_read_once_per_pass(world_config: Config, world: TrainingData, world_csv: dict[str, pathlib.Path],
                                        tmp_path: pathlib.Path, with_events: bool) -> None:
    impressions = _CountedReads(CsvImpressionSource(world_csv["impressions"], 900))
    events = _CountedReads(CsvEventSource(world_csv["events"], 700)) if with_events else None
    preprocess(events or ClickedEventSource(impressions), world.dataset.users, world.dataset.items,
               world_config.data, tmp_path / "out", shard_size=3000, impressions=impressions)
    # alone: passes 1, 2 and 3 (the events are its clicked rows); beside the events: passes 1 and 3
    assert impressions.reads == (2 if with_events else 3)
    assert events is None or events.reads == 3


def test_the_cli_streams_an_impression_log(world_csv: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "prepared"
    argv = ["--config", str(TINY_CONFIG), "--impressions", str(world_csv["impressions"]), "--users",
            str(world_csv["users"]), "--items", str(world_csv["items"]), "--output-dir", str(out),
            "--chunk-size", "900"]
    assert preprocess_cli.main(argv) == 0
    raw = json.loads((out / "manifest.json").read_text())
    shown = pd.read_csv(world_csv["impressions"])
    assert sum(raw["impression_splits"][split]["examples"] for split in SPLITS) == len(shown)
    assert sum(raw["splits"][split]["examples"] for split in SPLITS) == int(shown["clicked"].sum())
    assert "impressions in" in capsys.readouterr().out


def _impression_csv(folder: pathlib.Path, body: str) -> pathlib.Path:
    path = folder / "impressions.csv"
    path.write_text("user_id,item_id,timestamp,clicked,watch_time\n" + body)
    return path


@pytest.mark.parametrize(("body", "message"), [
    ("u1,a,10,1,5\nu1,b,5,0,\n", r"impressions\.csv: line 3: timestamp 5 is earlier than the row before"),
    ("u1,a,10,1,5\nu1,b,11,maybe,\n", r"clicked must be 1/0, true/false or yes/no, line 3 has 'maybe'"),
    ("u1,a,10,0,4\n", r"watch_time must be 0 or missing where clicked is false; line 2"),
    ("u1,a,10,0,\nu1,b,11,0,\n", r"no impression is clicked"),
])
def test_a_bad_impression_log_is_an_error_naming_the_line(world_config: Config, tmp_path: pathlib.Path, body: str,
                                                          message: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        impressions = CsvImpressionSource(_impression_csv(tmp_path, body), 1)
        preprocess(ClickedEventSource(impressions), _no_users(), _no_items(), world_config.data, out, 10,
                   impressions=impressions)
    assert not out.exists()


@pytest.mark.parametrize("events", ["user_id,item_id,timestamp\nu1,a,10\nu1,b,11\nu1,c,12\n",
                                    "user_id,item_id,timestamp\nu1,a,10\nu1,b,12\n"],
                         ids=["an-extra-event", "a-different-event"])
def test_events_that_are_not_the_clicked_impressions_are_refused(world_config: Config, tmp_path: pathlib.Path,
                                                                events: str) -> None:
    impressions = CsvImpressionSource(_impression_csv(tmp_path, "u1,a,10,1,5\nu1,b,11,0,\nu1,c,12,1,3\n"), 2)
    (tmp_path / "events.csv").write_text(events)
    with pytest.raises(DataError, match=r"events\.csv holds \d events and .*impressions\.csv \d clicked impressions"
                                        r".*the events must be exactly the clicked impressions"):
        preprocess(CsvEventSource(tmp_path / "events.csv"), _no_users(), _no_items(), world_config.data,
                   tmp_path / "out", 10, impressions=impressions)


def test_a_manifest_from_before_impressions_reads_as_without_them(tmp_path: pathlib.Path, world_config: Config,
                                                                   world: TrainingData) -> None:
    preprocess(FrameEventSource(world.dataset.events), world.dataset.users, world.dataset.items, world_config.data,
               tmp_path, shard_size=5000)
    path = tmp_path / "manifest.json"
    raw = json.loads(path.read_text())
    del raw["impression_splits"], raw["impression_history_length"]
    path.write_text(json.dumps(raw))
    manifest = Manifest.load(tmp_path)
    assert not manifest.has_impressions and manifest.examples("train", IMPRESSIONS) == 0
    batch = next(iter(manifest.read("train", 4)))
    assert batch["impression_history"].shape == (4, 1)
    with pytest.raises(DataError, match="split 'train' has no impressions"):
        manifest.read("train", 4, IMPRESSIONS)


def _no_users() -> pd.DataFrame:
    from trainer.data.schema import validate_users

    return validate_users(pd.DataFrame({"user_id": []}), "users")


def _no_items() -> pd.DataFrame:
    from trainer.data.schema import validate_items

    return validate_items(pd.DataFrame({"item_id": []}), "items")
