"""Preprocessed examples on disk: sharded TFRecord files of tf.train.Example, and their manifest.

One record per event, with the features of `trainer.data.examples.event_examples`:

    user_id, gender, occupation, region, language, item_id   bytes   []
    watch_history                                            bytes   [H]  most recent last, b"" pads at the start
    watch_history_times                                      int64   [H]  their unix seconds, 0 pads
    search_history                                           bytes   [S]
    age, request_time                                        int64   []
    watch_time, rating                                       float   []   NaN = missing

Records written before `language` and `watch_history_times` existed read them as "" and 0s.

When the log has impressions, every record also holds `impression_history` bytes [I] (the user's last I
impressions, most recent last, b"" pads; I = `examples.IMPRESSION_HISTORY_LENGTH`), and the impressions get
shards of their own, `impressions-{train,validation,test}-NNNNN`, one record per impression: the same
features (`request_time` the impression's, `rating` NaN) plus `clicked` int64 [] (1/0), `watch_time` 0 where
not clicked. Without impressions the reader fills `impression_history` [B, 1] with "".

`trainer.preprocess` writes them; `read_examples` (or `Manifest.read`) reads them back as a
tf.data.Dataset of the same feature dicts, batched, each input pipeline of a distributed job
reading its own share (whole files when there are enough files, else every n-th example).

The manifest (manifest.json, written last, so its presence means the folder is complete)
holds the shard files and counts per split, H and S, the vocabularies of the training
split and its item counts, t_max / t_span for the example age, the split boundaries and the
available features.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
from tensorflow.core.example import example_pb2

from recsys_common import contract
from trainer.data.examples import CLICKED, ITEM_ID, RATING, WATCH_TIME
from trainer.data.schema import DataError
from trainer.data.table_csv import read_items, read_users
from trainer.data.vocab import Vocabularies

MANIFEST = "manifest.json"
FORMAT_VERSION = 1
SPLITS = ("train", "validation", "test")
COMPRESSIONS = ("GZIP", "NONE")
STRING_FEATURES = (contract.USER_ID, contract.GENDER, contract.OCCUPATION, contract.REGION, contract.LANGUAGE,
                   ITEM_ID)
SEQUENCE_FEATURES = (contract.WATCH_HISTORY, contract.SEARCH_HISTORY)
INT_SEQUENCE_FEATURES = (contract.WATCH_HISTORY_TIMES,)
INT_FEATURES = (contract.AGE, contract.REQUEST_TIME)
FLOAT_FEATURES = (WATCH_TIME, RATING)
FEATURES = STRING_FEATURES + SEQUENCE_FEATURES + INT_SEQUENCE_FEATURES + INT_FEATURES + FLOAT_FEATURES
EVENTS, IMPRESSIONS = "events", "impressions"
KINDS = (EVENTS, IMPRESSIONS)


def feature_spec(history_length: int, search_history_length: int, impression_history_length: int = 0,
                 kind: str = EVENTS) -> dict[str, tf.io.FixedLenFeature]:
    """The parsing spec of a record (H = history_length, S = search_history_length, I = impression_history_length,
    0 when the records hold no impression history; `kind` "impressions" adds `clicked`)."""
    spec = {name: tf.io.FixedLenFeature([], tf.string) for name in STRING_FEATURES}
    # language and watch_history_times came after FORMAT_VERSION 1's first records, which parse with defaults
    spec[contract.LANGUAGE] = tf.io.FixedLenFeature([], tf.string, default_value="")
    spec[contract.WATCH_HISTORY] = tf.io.FixedLenFeature([history_length], tf.string)
    spec[contract.WATCH_HISTORY_TIMES] = tf.io.FixedLenFeature([history_length], tf.int64,
                                                               default_value=[0] * history_length)
    spec[contract.SEARCH_HISTORY] = tf.io.FixedLenFeature([search_history_length], tf.string)
    spec.update({name: tf.io.FixedLenFeature([], tf.int64) for name in INT_FEATURES})
    spec.update({name: tf.io.FixedLenFeature([], tf.float32) for name in FLOAT_FEATURES})
    if impression_history_length:
        spec[contract.IMPRESSION_HISTORY] = tf.io.FixedLenFeature([impression_history_length], tf.string)
    if kind == IMPRESSIONS:
        spec[CLICKED] = tf.io.FixedLenFeature([], tf.int64)
    return spec


def parse_records(serialized: tf.Tensor, spec: dict[str, tf.io.FixedLenFeature]) -> dict[str, tf.Tensor]:
    """A batch of serialized records [B] as feature dicts; the impression history [B, 1] of "" when they hold none."""
    features = tf.io.parse_example(serialized, spec)
    if contract.IMPRESSION_HISTORY not in features:
        features[contract.IMPRESSION_HISTORY] = tf.fill([tf.shape(serialized)[0], 1], "")
    return features


def serialize_examples(features: dict[str, np.ndarray], with_impressions: bool = False) -> list[bytes]:
    """Serialized tf.train.Example records, one per row.

    Args:
        features: the `event_examples` dict: every name of FEATURES, [N] (histories [N, H] and [N, S]); with
            `with_impressions`, also impression_history [N, I]; an `impression_examples` dict also holds
            clicked [N] bool, which is written too.
        with_impressions: write the impression history (the log has impressions).

    Returns:
        N serialized records.
    """
    _check_features(features)
    sequences = SEQUENCE_FEATURES + ((contract.IMPRESSION_HISTORY,) if with_impressions else ())
    strings = {name: _utf8(features[name]) for name in STRING_FEATURES + sequences}
    int_features = INT_FEATURES + ((CLICKED,) if CLICKED in features else ())
    numbers = {name: np.asarray(features[name]).astype(np.int64).tolist() if name == CLICKED
               else features[name].tolist() for name in INT_SEQUENCE_FEATURES + int_features + FLOAT_FEATURES}
    records = []
    for row in range(len(features[contract.USER_ID])):
        example = example_pb2.Example()
        feature = example.features.feature
        for name in STRING_FEATURES:
            feature[name].bytes_list.value.append(strings[name][row])
        for name in sequences:
            feature[name].bytes_list.value.extend(strings[name][row])
        for name in INT_SEQUENCE_FEATURES:
            feature[name].int64_list.value.extend(numbers[name][row])
        for name in int_features:
            feature[name].int64_list.value.append(numbers[name][row])
        for name in FLOAT_FEATURES:
            feature[name].float_list.value.append(numbers[name][row])
        records.append(example.SerializeToString())
    return records


def read_examples(
    files: str | pathlib.Path | Sequence[str | pathlib.Path],
    batch_size: int,
    history_length: int,
    search_history_length: int,
    *,
    compression: str = "GZIP",
    impression_history_length: int = 0,
    kind: str = EVENTS,
    shuffle: bool = False,
    seed: int = 0,
    shuffle_buffer: int = 10_000,
    repeat: bool = False,
    drop_remainder: bool = False,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Batches of examples from TFRecord shards, this input pipeline's share only.

    Without shuffling, records come in file order (files sorted by name), so a run is reproducible.
    With `input_context` (from `strategy.distribute_datasets_from_function`), pipeline i of n reads
    files i, i + n, ... when there are at least n files, else every n-th record of all files; give it
    the per-replica batch size (`input_context.get_per_replica_batch_size(global_batch_size)`).

    Args:
        files: a glob pattern, one path, or paths.
        batch_size: examples per batch of this pipeline.
        history_length: H of the records.
        search_history_length: S of the records.
        compression: "GZIP" or "NONE", as written.
        impression_history_length: I of the records (0: they hold no impression history).
        kind: "events", or "impressions" for impression records (which add clicked).
        shuffle: shuffle file order and records (a buffer of `shuffle_buffer` records), anew every epoch.
        seed: the shuffle seed.
        shuffle_buffer: records held for shuffling (bounds memory).
        repeat: repeat forever.
        drop_remainder: drop a last smaller batch (static batch shapes).
        input_context: the distributed input pipeline this dataset is for.

    Returns:
        A dataset of feature dicts: strings tf.string [B] (histories [B, H], [B, S], impression_history [B, I]
        or [B, 1] of ""), age and request_time int64 [B], watch_history_times int64 [B, H], watch_time and
        rating float32 [B]; impression records also clicked int64 [B].
    """
    paths = _resolve(files)
    if batch_size <= 0 or shuffle_buffer <= 0:
        raise DataError(f"read_examples: batch_size and shuffle_buffer must be > 0, got {batch_size}, "
                        f"{shuffle_buffer}")
    if compression not in COMPRESSIONS:
        raise DataError(f"read_examples: compression must be one of {COMPRESSIONS}, got {compression!r}")
    pipelines, pipeline = _pipeline(input_context)
    by_file = len(paths) >= pipelines
    file_names = tf.data.Dataset.from_tensor_slices(paths)
    if by_file:
        file_names = file_names.shard(pipelines, pipeline)
    records = _records(file_names, "" if compression == "NONE" else compression, shuffle, seed, len(paths))
    if not by_file:
        records = records.shard(pipelines, pipeline)
    if shuffle:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        records = records.repeat()
    spec = feature_spec(history_length, search_history_length, impression_history_length, kind)
    batches = records.batch(batch_size, drop_remainder=drop_remainder)
    return batches.map(lambda serialized: parse_records(serialized, spec),
                       num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class Shard:
    """One TFRecord file of a split: its name in the folder and its number of records."""

    file: str
    examples: int


@dataclasses.dataclass
class Manifest:
    """What `trainer.preprocess` wrote into a folder (see the module docstring)."""

    directory: pathlib.Path
    source: str
    history_length: int
    search_history_length: int
    compression: str
    shards: dict[str, list[Shard]]
    vocab: Vocabularies
    t_max: int
    t_span: int
    validation_start: int
    test_start: int
    available_features: set[str]
    events: int
    dropped_events: int
    dropped_users: int
    train_item_counts: dict[str, int] = dataclasses.field(default_factory=dict)
    users_file: str = "users.csv"
    items_file: str = "items.csv"
    impression_shards: dict[str, list[Shard]] = dataclasses.field(default_factory=dict)
    impression_history_length: int = 0

    @property
    def has_impressions(self) -> bool:
        """Whether the log had impressions (then every record holds an impression history)."""
        return self.impression_history_length > 0

    def files(self, split: str, kind: str = EVENTS) -> list[str]:
        """The absolute paths of the `kind` shards of `split` ("train", "validation" or "test")."""
        return [str(self.directory / shard.file) for shard in self._split(split, kind)]

    def examples(self, split: str, kind: str = EVENTS) -> int:
        return sum(shard.examples for shard in self._split(split, kind))

    def read(self, split: str, batch_size: int, kind: str = EVENTS, **options: Any) -> tf.data.Dataset:
        """`read_examples` of the `kind` shards of `split` (options: shuffle, seed, input_context, ...)."""
        if not self._split(split, kind):
            raise DataError(f"{self.directory / MANIFEST}: split {split!r} has no {kind}")
        return read_examples(self.files(split, kind), batch_size, self.history_length, self.search_history_length,
                             compression=self.compression, impression_history_length=self.impression_history_length,
                             kind=kind, **options)

    def users(self) -> pd.DataFrame:
        return read_users(self.directory / self.users_file)

    def items(self) -> pd.DataFrame:
        return read_items(self.directory / self.items_file)

    def write(self) -> pathlib.Path:
        """Writes manifest.json atomically (a reader never sees half of it)."""
        path = self.directory / MANIFEST
        partial = path.with_name(MANIFEST + ".partial")
        partial.write_text(json.dumps(self._to_json(), indent=2) + "\n")
        partial.replace(path)
        return path

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> Manifest:
        """Reads the manifest of `directory`; raises DataError if it is missing, malformed or lists absent files."""
        directory = pathlib.Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise DataError(f"{directory} holds no {MANIFEST}: run `python -m trainer.preprocess --output-dir "
                            f"{directory} ...` first (an unfinished run leaves no manifest)")
        try:
            raw = json.loads(path.read_text())
            manifest = cls._from_json(directory, raw)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise DataError(f"{path}: not a manifest of format {FORMAT_VERSION}: {error!r}") from None
        missing = [name for kind in KINDS for split in SPLITS for name in manifest.files(split, kind)
                   if not pathlib.Path(name).is_file()]
        if missing:
            raise DataError(f"{path}: listed shard file(s) missing: {missing[:5]}")
        return manifest

    def _split(self, split: str, kind: str = EVENTS) -> list[Shard]:
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if kind not in KINDS:
            raise DataError(f"unknown record kind {kind!r}; choose one of {', '.join(KINDS)}")
        return (self.shards if kind == EVENTS else self.impression_shards).get(split, [])

    def _to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "history_length": self.history_length,
            "search_history_length": self.search_history_length,
            "compression": self.compression,
            "splits": self._splits_json(EVENTS),
            "impression_splits": self._splits_json(IMPRESSIONS),
            "impression_history_length": self.impression_history_length,
            "t_max": self.t_max,
            "t_span": self.t_span,
            "validation_start": self.validation_start,
            "test_start": self.test_start,
            "available_features": sorted(self.available_features),
            "events": self.events,
            "dropped_events": self.dropped_events,
            "dropped_users": self.dropped_users,
            "train_item_counts": self.train_item_counts,
            "users_file": self.users_file,
            "items_file": self.items_file,
            "vocabularies": json.loads(self.vocab.to_json()),
        }

    def _splits_json(self, kind: str) -> dict[str, Any]:
        return {split: {"examples": self.examples(split, kind),
                        "shards": [dataclasses.asdict(shard) for shard in self._split(split, kind)]}
                for split in SPLITS}

    @classmethod
    def _from_json(cls, directory: pathlib.Path, raw: dict[str, Any]) -> Manifest:
        if raw["format_version"] != FORMAT_VERSION:
            raise ValueError(f"format_version {raw['format_version']}")
        return cls(
            directory=directory,
            source=str(raw["source"]),
            history_length=int(raw["history_length"]),
            search_history_length=int(raw["search_history_length"]),
            compression=str(raw["compression"]),
            shards=_shards_of(raw["splits"]),
            vocab=Vocabularies.from_json(json.dumps(raw["vocabularies"])),
            t_max=int(raw["t_max"]),
            t_span=int(raw["t_span"]),
            validation_start=int(raw["validation_start"]),
            test_start=int(raw["test_start"]),
            available_features=set(raw["available_features"]),
            events=int(raw["events"]),
            dropped_events=int(raw["dropped_events"]),
            dropped_users=int(raw["dropped_users"]),
            train_item_counts={str(item): int(count) for item, count in raw["train_item_counts"].items()},
            users_file=str(raw["users_file"]),
            items_file=str(raw["items_file"]),
            # manifests written before impressions were streamed hold neither key
            impression_shards=_shards_of(raw["impression_splits"]) if "impression_splits" in raw else {},
            impression_history_length=int(raw.get("impression_history_length", 0)),
        )


def _shards_of(splits: dict[str, Any]) -> dict[str, list[Shard]]:
    return {split: [Shard(str(s["file"]), int(s["examples"])) for s in splits[split]["shards"]] for split in SPLITS}


def _records(file_names: tf.data.Dataset, compression: str, shuffle: bool, seed: int,
             num_files: int) -> tf.data.Dataset:
    def read(name: tf.Tensor) -> tf.data.Dataset:
        return tf.data.TFRecordDataset(name, compression_type=compression)

    if not shuffle:
        return file_names.flat_map(read)
    file_names = file_names.shuffle(num_files, seed=seed, reshuffle_each_iteration=True)
    return file_names.interleave(read, cycle_length=min(num_files, 4), num_parallel_calls=tf.data.AUTOTUNE)


def _pipeline(input_context: tf.distribute.InputContext | None) -> tuple[int, int]:
    if input_context is None:
        return 1, 0
    return int(input_context.num_input_pipelines), int(input_context.input_pipeline_id)


def _resolve(files: str | pathlib.Path | Sequence[str | pathlib.Path]) -> list[str]:
    if isinstance(files, (str, pathlib.Path)):
        pattern = str(files)
        paths = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
    else:
        paths = [str(path) for path in files]
    if not paths:
        raise DataError(f"read_examples: no files match {files!r}")
    missing = [path for path in paths if not pathlib.Path(path).is_file()]
    if missing:
        raise DataError(f"read_examples: file(s) not found: {missing[:5]}")
    return paths


def _check_features(features: dict[str, np.ndarray]) -> None:
    missing = [name for name in FEATURES if name not in features]
    if missing:
        raise DataError(f"serialize_examples: missing feature(s) {missing}")
    rows = {name: len(features[name]) for name in FEATURES}
    if len(set(rows.values())) != 1:
        raise DataError(f"serialize_examples: features have different numbers of rows: {rows}")
    for name in SEQUENCE_FEATURES:
        if np.ndim(features[name]) != 2:
            raise DataError(f"serialize_examples: {name} must be [N, width], got shape {np.shape(features[name])}")


def _utf8(values: np.ndarray) -> list[Any]:
    """str array [N] or [N, W] -> nested lists of utf-8 bytes."""
    array = np.asarray(values, dtype=object)
    encoded = np.array([value.encode() for value in array.ravel()], dtype=object).reshape(array.shape)
    return encoded.tolist()
