"""Event and impression logs as TFRecord files: read back exactly, bad records named, usable wherever a CSV log is."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from trainer.data.event_stream import CsvEventSource
from trainer.data.logs import load_logs
from trainer.data.record_logs import RecordEventSource, RecordImpressionSource, open_log, write_records
from trainer.data.schema import DataError, validate_events, validate_impressions
from trainer.data.table_csv import write_users

IMPRESSIONS = validate_impressions(pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u2", "u1"], "item_id": ["a", "b", "a", "c", "c"],
    "timestamp": [10, 10, 20, 20, 30], "clicked": [True, False, True, False, True],
    "watch_time": [30.5, 0.0, np.nan, 0.0, 12.0]}), "t")
EVENTS = validate_events(pd.DataFrame({
    "user_id": ["u1", "u2", "u1"], "item_id": ["a", "a", "c"], "timestamp": [10, 20, 30],
    "rating": [4.0, np.nan, 5.0], "watch_time": [30.5, np.nan, 12.0], "query": ["red cars", None, "jazz"]}), "t")


def _read(source: RecordEventSource) -> pd.DataFrame:
    return pd.concat([chunk.events for chunk in source.chunks()], ignore_index=True)


@pytest.mark.parametrize("suffix", [".tfrecord", ".tfrecord.gz"])
@pytest.mark.parametrize("chunk_size", [1, 2, 100])
def test_a_written_log_reads_back_exactly(tmp_path: pathlib.Path, suffix: str, chunk_size: int) -> None:
    shown = RecordImpressionSource(write_records(IMPRESSIONS, tmp_path / f"impressions{suffix}"), chunk_size)
    pd.testing.assert_frame_equal(_read(shown), IMPRESSIONS, check_dtype=True)
    events = RecordEventSource(write_records(EVENTS, tmp_path / f"events{suffix}"), chunk_size)
    pd.testing.assert_frame_equal(_queries_as_objects(_read(events)), _queries_as_objects(EVENTS))


def _queries_as_objects(events: pd.DataFrame) -> pd.DataFrame:
    """The query column as str / None objects: pandas infers object or str dtype (None or NaN) per chunk."""
    queries = events["query"].map(lambda query: query if isinstance(query, str) else None).astype(object)
    return events.assign(query=queries)


def _example(**features: object) -> bytes:
    example = tf.train.Example()
    for name, value in features.items():
        if isinstance(value, str):
            example.features.feature[name].bytes_list.value.append(value.encode())
        elif isinstance(value, float):
            example.features.feature[name].float_list.value.append(value)
        else:
            example.features.feature[name].int64_list.value.append(int(value))  # type: ignore[call-overload]
    return example.SerializeToString()


def _write(path: pathlib.Path, records: list[bytes]) -> pathlib.Path:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for one in records:
            writer.write(one)
    return path


GOOD = {"user_id": "u1", "item_id": "a", "timestamp": 10, "clicked": 1}


@pytest.mark.parametrize(("records", "message"), [
    ([_example(**GOOD), _example(user_id="u1", item_id="b", clicked=0)],
     r"record 1: feature 'timestamp' is missing or not a one-value int64 list"),
    ([_example(**GOOD), _example(**{**GOOD, "timestamp": 11.5})],
     r"record 1: feature 'timestamp' is missing or not a one-value int64 list"),
    ([_example(**GOOD), _example(**{**GOOD, "watch_time": 3})], r"record 1: feature 'watch_time' is not a one-value"),
    ([_example(**GOOD), _example(**{**GOOD, "clicked": 2})],
     r"clicked must be 1/0, true/false or yes/no, record 1 has '2'"),
    ([_example(**GOOD), _example(**{**GOOD, "user_id": ""})], r"user_id is empty in record 1"),
    ([_example(**{**GOOD, "timestamp": 30}), _example(**GOOD)],
     r"record 1: timestamp 10 is earlier than the row before \(30\)"),
    ([], r"the impression log has no records"),
])
def test_bad_records_are_named(tmp_path: pathlib.Path, records: list[bytes], message: str) -> None:
    path = _write(tmp_path / "impressions.tfrecord", records)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}: .*{message}"):  # the file, then the record
        _read(RecordImpressionSource(path, chunk_size=1))


def test_a_file_that_is_not_tfrecord_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "events.tfrecord.gz"
    path.write_text("user_id,item_id,timestamp\nu1,a,1\n")
    with pytest.raises(DataError, match=r"not a TFRecord file \(GZIP\)"):
        _read(RecordEventSource(path))


def test_open_log_picks_the_reader_by_suffix(tmp_path: pathlib.Path) -> None:
    (tmp_path / "e.csv").write_text("user_id,item_id,timestamp\nu1,a,1\n")
    assert type(open_log(tmp_path / "e.csv", False, 10)) is CsvEventSource
    write_records(IMPRESSIONS, tmp_path / "i.tfrecord.gz")
    assert type(open_log(tmp_path / "i.tfrecord.gz", True, 10)) is RecordImpressionSource
    assert type(open_log(tmp_path / "i.tfrecord.gz", False, 10)) is RecordEventSource


def test_the_logs_source_reads_tfrecord_logs_like_csv(tmp_path: pathlib.Path) -> None:
    csv, records = tmp_path / "csv", tmp_path / "records"
    for folder in (csv, records):
        folder.mkdir()
        write_users(pd.DataFrame({"user_id": ["u1", "u2"], "gender": ["F", ""], "age": [30, 0],
                                  "occupation": ["", ""], "region": ["", ""], "language": ["en", ""]}),
                    folder / "users.csv")
    IMPRESSIONS.assign(clicked=IMPRESSIONS["clicked"].astype(int)).to_csv(csv / "impressions.csv", index=False)
    # shuffled: the in-memory source sorts a log, as it does a CSV one
    write_records(IMPRESSIONS.sample(frac=1.0, random_state=0), records / "impressions.tfrecord.gz")
    from_csv, from_records = load_logs(csv), load_logs(records)
    assert from_records.impressions is not None and from_csv.impressions is not None
    pd.testing.assert_frame_equal(from_records.impressions, from_csv.impressions)
    pd.testing.assert_frame_equal(from_records.events, from_csv.events)
    IMPRESSIONS.to_csv(records / "impressions.csv", index=False)
    with pytest.raises(DataError, match="holds impressions.csv and impressions.tfrecord.gz; keep one form"):
        load_logs(records)
