"""Streaming preprocessing: the TFRecord examples equal the in-memory path's, split by split."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pandas as pd
import pytest

from trainer import preprocess as preprocess_cli
from trainer.config import Config
from trainer.data.bundle import TrainingData
from trainer.data.event_stream import CsvEventSource, FrameEventSource
from trainer.data.schema import DataError
from trainer.data.tfrecord import SPLITS, Manifest
from trainer.preprocess import preprocess

from .conftest import as_numpy, assert_same_features, concat_batches


def _expected(data: TrainingData, split: str) -> dict[str, np.ndarray]:
    return {"train": data.train_examples, "validation": data.validation_examples, "test": data.test_examples}[split]


def _read_all(manifest: Manifest, split: str) -> dict[str, np.ndarray]:
    return as_numpy(concat_batches(list(manifest.read(split, batch_size=97).as_numpy_iterator())))


@pytest.mark.parametrize("from_csv, chunk_size", [(False, 311), (True, 1000), (True, 100_000)])
def test_streamed_examples_equal_in_memory_examples(tiny_config: Config, tiny_data: TrainingData,
                                                    tiny_csv: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                                    from_csv: bool, chunk_size: int) -> None:
    dataset = tiny_data.dataset
    source = (CsvEventSource(tiny_csv["events"], chunk_size) if from_csv
              else FrameEventSource(dataset.events, "tiny", chunk_size))
    manifest = preprocess(source, dataset.users, dataset.items, tiny_config.data, tmp_path / "out", shard_size=700)
    manifest = Manifest.load(tmp_path / "out")  # what a trainer reads back
    for split in SPLITS:
        expected = _expected(tiny_data, split)
        assert_same_features(_read_all(manifest, split), expected)
        assert manifest.examples(split) == len(expected["item_id"])
        sizes = [shard.examples for shard in manifest.shards[split]]
        assert len(sizes) == math.ceil(len(expected["item_id"]) / 700) and max(sizes) <= 700
    assert manifest.vocab == tiny_data.vocab
    assert (manifest.t_max, manifest.t_span) == (tiny_data.t_max, tiny_data.t_span)
    assert (manifest.validation_start, manifest.test_start) == (tiny_data.split.validation_start,
                                                                tiny_data.split.test_start)
    assert manifest.available_features == tiny_data.available_features
    pd.testing.assert_frame_equal(manifest.items().reset_index(drop=True), dataset.items.reset_index(drop=True))
    pd.testing.assert_frame_equal(manifest.users().reset_index(drop=True), dataset.users.reset_index(drop=True))


def test_sparse_users_are_dropped_like_load_dataset(tiny_config: Config, tmp_path: pathlib.Path) -> None:
    rows = [("u1", "a", 10), ("u1", "b", 20), ("u1", "c", 30), ("u2", "a", 15), ("u3", "b", 25), ("u3", "d", 40),
            ("u1", "d", 50), ("u3", "a", 60)]
    events = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).sort_values("timestamp")
    path = tmp_path / "events.csv"
    events.to_csv(path, index=False)
    data = tiny_config.data
    manifest = preprocess(CsvEventSource(path, 3), pd.DataFrame({"user_id": []}).pipe(_users),
                          pd.DataFrame({"item_id": []}).pipe(_items), data, tmp_path / "out", shard_size=2)
    assert (manifest.events, manifest.dropped_events, manifest.dropped_users) == (7, 1, 1)
    read = {split: _read_all(manifest, split) for split in SPLITS if manifest.examples(split)}
    users = np.concatenate([features["user_id"] for features in read.values()])
    assert "u2" not in set(users) and len(users) == 7
    # 7 kept events, 10% test: position ceil(6.3) = 7 is past the end, so test_start = last + 1 and test is empty.
    assert manifest.test_start == 61 and manifest.examples("test") == 0
    assert set(manifest.items()["item_id"]) == {"a", "b", "c", "d"}  # completed from the log


def _users(frame: pd.DataFrame) -> pd.DataFrame:
    from trainer.data.schema import validate_users

    return validate_users(frame, "users")


def _items(frame: pd.DataFrame) -> pd.DataFrame:
    from trainer.data.schema import validate_items

    return validate_items(frame, "items")


@pytest.mark.parametrize("lines, message", [
    ("user_id,item_id,timestamp\nu1,a,10\nu1,b,5\n", r"events\.csv: line 3: timestamp 5 is earlier"),
    ("user_id,item_id,timestamp\nu1,a,10\nu1,b,x\n", r"timestamp must be an integer, line 3 has 'x'"),
    ("user_id,item_id,timestamp\nu1,a,10\n,b,11\n", r"user_id is empty in line 3"),
    ("user_id,item_id,timestamp\nu1,a,10\n\nu1,b,11\n", r"events\.csv line 3: an empty row"),
    ("user_id,item_id,timestamp\nu1,a,10\n  \t\nu1,b,11\n", r"events\.csv line 3: an empty row"),
    ("user_id;item_id;timestamp\nu1;a;10\n", r"lacks column\(s\) \['user_id', 'item_id', 'timestamp'\]"),
    ("user_id,item_id,timestamp,watch_time\nu1,a,10,-3\n", r"watch_time must be >= 0"),
    ("user_id,item_id,timestamp\nu1,a,10,extra\n", r"malformed CSV"),
    ("", r"the file is empty"),
])
def test_bad_logs_are_errors_naming_the_line(tiny_config: Config, tmp_path: pathlib.Path, lines: str,
                                             message: str) -> None:
    path = tmp_path / "events.csv"
    path.write_text(lines)
    out = tmp_path / "out"
    with pytest.raises(DataError, match=message):
        preprocess(CsvEventSource(path, 1), _users(pd.DataFrame({"user_id": []})),
                   _items(pd.DataFrame({"item_id": []})), tiny_config.data, out, shard_size=10)
    assert not out.exists()  # nothing half-written is left behind


def test_output_folder_must_be_new(tiny_config: Config, tiny_data: TrainingData, tmp_path: pathlib.Path) -> None:
    (tmp_path / "old.txt").write_text("keep me")
    with pytest.raises(DataError, match="not empty"):
        preprocess(FrameEventSource(tiny_data.dataset.events), tiny_data.dataset.users, tiny_data.dataset.items,
                   tiny_config.data, tmp_path, shard_size=10)
    assert (tmp_path / "old.txt").read_text() == "keep me"


def test_cli_writes_the_manifest_and_reports_errors(tiny_csv: dict[str, pathlib.Path], tmp_path: pathlib.Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from .conftest import TINY_CONFIG

    out = tmp_path / "prepared"
    argv = ["--config", str(TINY_CONFIG), "--events", str(tiny_csv["events"]), "--users", str(tiny_csv["users"]),
            "--items", str(tiny_csv["items"]), "--output-dir", str(out), "--shard-size", "1000",
            "--chunk-size", "500", "--compression", "NONE", "--data.history_length", "4"]
    assert preprocess_cli.main(argv) == 0
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["history_length"] == 4 and raw["compression"] == "NONE"
    assert all(shard["file"].endswith(".tfrecord") for shard in raw["splits"]["train"]["shards"])
    first = next(iter(Manifest.load(out).read("train", batch_size=5)))
    assert first["watch_history"].shape == (5, 4)
    assert "train:" in capsys.readouterr().out
    # a second run into the same folder is refused with exit status 2 and the reason
    assert preprocess_cli.main(argv) == 2
    assert "not empty" in capsys.readouterr().err


def test_manifest_errors_are_clear(tmp_path: pathlib.Path, tiny_config: Config, tiny_data: TrainingData) -> None:
    with pytest.raises(DataError, match="holds no manifest.json"):
        Manifest.load(tmp_path)
    manifest = preprocess(FrameEventSource(tiny_data.dataset.events), tiny_data.dataset.users,
                          tiny_data.dataset.items, tiny_config.data, tmp_path / "out", shard_size=2000)
    pathlib.Path(manifest.files("train")[0]).unlink()
    with pytest.raises(DataError, match="listed shard file"):
        Manifest.load(tmp_path / "out")
    with pytest.raises(DataError, match="unknown split 'dev'"):
        manifest.files("dev")
