"""Your own event or impression log as TFRecord files of tf.train.Example, read in chunks like a CSV log.

One record per row, each feature a one-value list named as the CSV column:

    events:       user_id bytes, item_id bytes, timestamp int64, rating float*, watch_time float*, query bytes*
    impressions:  user_id bytes, item_id bytes, timestamp int64, clicked int64 (1/0), watch_time float*

A feature marked * may be left out of a record (a missing value). Files whose name ends in .gz are
read as GZIP. Records must be in time order; each chunk is validated as the CSV log's is, and
errors name the file and the record (0-based), e.g. "events.tfrecord: record 41: timestamp ...".
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import tensorflow as tf

from trainer.data.event_stream import CsvEventSource, CsvImpressionSource, EventSource, LogFile, Validate, validated
from trainer.data.schema import DataError, validate_events, validate_impressions

RECORD_SUFFIXES = (".tfrecord", ".tfrecord.gz", ".tfrecords", ".tfrecords.gz")
_MISSING_FLOAT = float("nan")
_KEY_FEATURES = {  # the features of every row of both logs
    "user_id": tf.io.FixedLenFeature([], tf.string),
    "item_id": tf.io.FixedLenFeature([], tf.string),
    "timestamp": tf.io.FixedLenFeature([], tf.int64),
}


def record(row: int) -> str:
    return f"record {row}"


def is_record_file(path: str | pathlib.Path) -> bool:
    """Whether `path` names a TFRecord log (by its suffix), rather than a CSV file."""
    return str(path).endswith(RECORD_SUFFIXES)


def open_log(path: str | pathlib.Path, impressions: bool, chunk_size: int) -> EventSource:
    """The chunked reader of an event (or impression) log: TFRecord by its suffix, else CSV."""
    path = pathlib.Path(path)
    if is_record_file(path):
        return record_log(path, impressions, chunk_size)
    return CsvImpressionSource(path, chunk_size) if impressions else CsvEventSource(path, chunk_size)


def record_log(path: pathlib.Path, impressions: bool, chunk_size: int = 100_000) -> RecordEventSource:
    """The chunked reader of a TFRecord event (or impression) log."""
    return RecordImpressionSource(path, chunk_size) if impressions else RecordEventSource(path, chunk_size)


@dataclasses.dataclass
class RecordEventSource(LogFile):
    """A TFRecord event log on disk, read `chunk_size` records at a time."""

    log: ClassVar[str] = "event log"
    validate: ClassVar[Validate] = staticmethod(validate_events)
    place: ClassVar[Callable[[int], str]] = staticmethod(record)
    rows: ClassVar[str] = "records"
    spec: ClassVar[dict[str, Any]] = {
        **_KEY_FEATURES,
        "rating": tf.io.FixedLenFeature([], tf.float32, default_value=_MISSING_FLOAT),
        "watch_time": tf.io.FixedLenFeature([], tf.float32, default_value=_MISSING_FLOAT),
        "query": tf.io.FixedLenFeature([], tf.string, default_value=""),
    }

    def read_all(self) -> pd.DataFrame:
        """The whole log as one validated table, in any order (what `data.source: logs` reads into memory)."""
        raw = list(self._raw_chunks())
        if not raw:
            raise self.empty_error()
        return validated(type(self).validate, pd.concat(raw, ignore_index=True), self.name, 0, record)

    def _raw_chunks(self) -> Iterator[pd.DataFrame]:
        first_row = 0
        for serialized in self._batches():
            yield self._table(serialized, first_row)
            first_row += len(serialized)

    def _batches(self) -> Iterator[np.ndarray]:
        compression = "GZIP" if self.path.name.endswith(".gz") else ""
        records = tf.data.TFRecordDataset(str(self.path), compression_type=compression).batch(self.chunk_size)
        try:
            yield from records.as_numpy_iterator()
        except tf.errors.DataLossError:
            raise DataError(f"{self.name}: not a TFRecord file{' (GZIP)' if compression else ''}, or truncated "
                            "(a .gz name means GZIP)") from None

    def _table(self, serialized: np.ndarray, first_row: int) -> pd.DataFrame:
        """The chunk's records as a table of the CSV columns (str ids, missing values as NaN / None)."""
        try:
            parsed = tf.io.parse_example(serialized, self.spec)
        except tf.errors.InvalidArgumentError:
            raise DataError(self._first_bad_record(serialized, first_row)) from None
        table = {}
        for column, values in parsed.items():
            array = values.numpy()
            if array.dtype == object:
                table[column] = [_text(value, self.name, first_row + row, column) for row, value in enumerate(array)]
            else:
                table[column] = array
        frame = pd.DataFrame(table)
        if "query" in frame:
            frame["query"] = frame["query"].where(frame["query"] != "", None)
        if "clicked" in frame:
            frame["clicked"] = frame["clicked"].astype(str)  # validate_impressions reads 1/0 and names other values
        return frame

    def _first_bad_record(self, serialized: np.ndarray, first_row: int) -> str:
        """Which record and feature `parse_example` refused, and what the feature must be."""
        for row, one in enumerate(serialized):
            for column, feature in self.spec.items():
                try:
                    tf.io.parse_single_example(one, {column: feature})
                except tf.errors.InvalidArgumentError:
                    kind = {tf.string: "bytes", tf.int64: "int64", tf.float32: "float"}[feature.dtype]
                    needed = "missing or not" if feature.default_value is None else "not"
                    return (f"{self.name}: {record(first_row + row)}: feature {column!r} is {needed} a one-value "
                            f"{kind} list")
        return f"{self.name}: records {first_row}..{first_row + len(serialized) - 1} do not parse"


@dataclasses.dataclass
class RecordImpressionSource(RecordEventSource):
    """A TFRecord impression log on disk, read `chunk_size` records at a time."""

    log: ClassVar[str] = "impression log"
    validate: ClassVar[Validate] = staticmethod(validate_impressions)
    spec: ClassVar[dict[str, Any]] = {
        **_KEY_FEATURES,
        "clicked": tf.io.FixedLenFeature([], tf.int64),
        "watch_time": tf.io.FixedLenFeature([], tf.float32, default_value=_MISSING_FLOAT),
    }


def _text(value: bytes, name: str, row: int, column: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"{name}: {record(row)}: {column} is not utf-8 text") from None


def write_records(table: pd.DataFrame, path: str | pathlib.Path) -> pathlib.Path:
    """Writes an event or impression table (the contract's columns) as such a log: one record per row, a
    missing value left out, clicked as 1/0; GZIP when `path` ends in .gz. The inverse of the sources above."""
    path = pathlib.Path(path)
    options = tf.io.TFRecordOptions(compression_type="GZIP" if path.name.endswith(".gz") else "")
    with tf.io.TFRecordWriter(str(path), options) as writer:
        for row in table.itertuples(index=False):
            writer.write(_example(row._asdict()).SerializeToString())
    return path


def _example(row: dict[str, Any]) -> tf.train.Example:
    example = tf.train.Example()
    feature = example.features.feature
    for column, value in row.items():
        if value is None or (isinstance(value, float) and np.isnan(value)):
            continue
        if column in ("user_id", "item_id", "query"):
            feature[column].bytes_list.value.append(str(value).encode())
        elif column in ("timestamp", "clicked"):
            feature[column].int64_list.value.append(int(value))
        elif column in ("rating", "watch_time"):
            feature[column].float_list.value.append(float(value))
    return example
