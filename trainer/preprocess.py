"""Streaming preprocessing: an event log of any length -> sharded TFRecord examples + manifest.json.

    # the configured source (synthetic / MovieLens), streamed in chunks:
    python -m trainer.preprocess --config configs/default.yaml --output-dir prepared/ --shard-size 100000
    # your own log: a CSV in the data contract's columns, in time order, plus the user and item tables:
    python -m trainer.preprocess --config configs/default.yaml --events logs/events.csv \\
        --users logs/users.csv --items logs/items.csv --output-dir prepared/ --shard-size 200000
    # with what was shown: an impression log (user_id,item_id,timestamp,clicked,watch_time, in time order),
    # alone (the watches are its clicked rows) or beside --events (whose rows must be the clicked impressions);
    # either log may be a TFRecord file of tf.train.Example records instead (.tfrecord[.gz], see
    # trainer/data/record_logs.py):
    python -m trainer.preprocess --config configs/default.yaml --impressions logs/impressions.csv \\
        --users logs/users.csv --items logs/items.csv --output-dir prepared/

The log is read three times, `--chunk-size` rows at a time, and never held whole:
1. validate every row (errors name the file line), check time order, count events per user
   and collect the item ids;
2. find the temporal split's boundaries (the time quantiles of `trainer.data.splits.temporal_split`,
   over the events of users with at least `data.min_events_per_user` events, as `load_dataset` keeps);
3. build each event's example with `trainer.data.streaming_examples.ContextStream` (the features of
   `event_examples`; history from all earlier events of any split), write it to its split's shards,
   `--shard-size` records per file, and count the training split's vocabularies.
Memory is O(users x (H + S) + items + chunk), whatever the number of events.

With impressions, pass 1 also validates the impression log and checks that its clicked rows are the
events (an order-free checksum of their (user, item, timestamp) rows), and pass 3 walks the events and
the impressions together (`trainer.data.streaming_examples.time_slices`): every record then carries the
user's impression history, and each impression of a kept user gets a record of its own in its split's
`impressions-*` shards (`trainer.data.tfrecord`), which the ranker trains on. Memory adds
O(users x I), I = the impression history length. An impression log alone (its clicked rows are the
events, `ClickedEventSource`) is read three times as well: once in pass 1, with nothing to check, and
once in pass 3, which takes each slice's events from its impressions.

The folder then holds `{train,validation,test}-NNNNN.tfrecord[.gz]`, users.csv, items.csv (the
tables, completed with every user and item of the log) and manifest.json, written last: see
`trainer.data.tfrecord` for the record format and the reader. Exit status: 0 on success, 2 for a
bad config or bad input (the message names the key, file or line), 1 for anything else.

Step 2, training from the folder (retrieval and ranking stream the training shards; evaluation uses
the validation/test shards; a sample of at most `data.prepared_sample_examples` training examples
gives the ranking features' statistics and the NCF comparison table, see `trainer.data.prepared`
and deploy/README.md):

    python -m trainer.task --config configs/default.yaml --data.prepared_dir prepared/
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import pathlib
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from trainer import config as config_lib
from trainer.data.event_stream import ClickedEventSource, EventSource, FrameEventSource, FrameImpressionSource
from trainer.data.examples import IMPRESSION_HISTORY_LENGTH
from trainer.data.record_logs import open_log
from trainer.data.schema import (
    DataError,
    Dataset,
    events_from_impressions,
    no_clicks_error,
    validate_items,
    validate_users,
)
from trainer.data.splits import split_positions
from trainer.data.streaming_examples import ContextStream, ImpressionContextStream, time_slices
from trainer.data.table_csv import read_items, read_users, with_missing_rows, write_items, write_users
from trainer.data.tfrecord import (
    COMPRESSIONS,
    EVENTS,
    IMPRESSIONS,
    MANIFEST,
    SPLITS,
    Manifest,
    Shard,
    serialize_examples,
)
from trainer.data.vocab_counts import VocabularyCounter

Examples = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class LogSummary:
    """What the first pass learns: events per user, every user and item id, and a checksum of the events'
    (user, item, time) rows."""

    events_per_user: dict[str, int]
    item_ids: set[str]
    user_ids: set[str] = dataclasses.field(default_factory=set)
    checksum: int = 0

    def kept_users(self, min_events_per_user: int) -> set[str]:
        return {user for user, count in self.events_per_user.items() if count >= min_events_per_user}


def preprocess(
    source: EventSource,
    users: pd.DataFrame,
    items: pd.DataFrame,
    data: config_lib.DataConfig,
    output_dir: pathlib.Path,
    shard_size: int,
    compression: str = "GZIP",
    impressions: EventSource | None = None,
) -> Manifest:
    """Writes the examples of every event of `source` into `output_dir` (see the module docstring).

    Args:
        source: the time-ordered event log (with impressions: their clicked rows, e.g. `ClickedEventSource`).
        users: the user table (validated).
        items: the item table (validated).
        data: history lengths, split fractions, min_events_per_user.
        output_dir: a new or empty folder (removed again if the run fails).
        shard_size: records per TFRecord file.
        compression: "GZIP" or "NONE".
        impressions: the time-ordered impression log (chunks of `schema.validate_impressions` tables), or None.

    Returns:
        The manifest written to output_dir/manifest.json.
    """
    if shard_size <= 0:
        raise DataError(f"--shard-size must be > 0, got {shard_size}")
    if compression not in COMPRESSIONS:
        raise DataError(f"--compression must be one of {COMPRESSIONS}, got {compression!r}")
    output_dir = pathlib.Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise DataError(f"output folder {output_dir} is not empty; choose a new folder")
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        return _preprocess(source, impressions, users, items, data, output_dir, shard_size, compression)
    except BaseException:
        shutil.rmtree(output_dir, ignore_errors=True)
        raise


def summarize(source: EventSource, clicked_only: bool = False) -> LogSummary:
    """Pass 1: validates the whole log and counts rows per user (of an impression log: the clicked rows are
    counted and checksummed, the item ids are those of every row)."""
    per_user: collections.Counter[str] = collections.Counter()
    item_ids: set[str] = set()
    shown_user_ids: set[str] = set()  # only an impression log has users whose rows are not all counted
    checksum = 0
    for chunk in source.chunks():
        item_ids.update(chunk.events["item_id"].unique())
        rows = chunk.events
        if clicked_only:
            shown_user_ids.update(rows["user_id"].unique())
            rows = rows[rows["clicked"].to_numpy()]
        per_user.update(rows["user_id"].value_counts().to_dict())
        checksum = (checksum + _row_checksum(rows)) % 2**64
    if not per_user and not clicked_only:
        raise DataError(f"{source.name}: the event log has no events")
    return LogSummary(dict(per_user), item_ids, shown_user_ids | per_user.keys(), checksum)


def _row_checksum(rows: pd.DataFrame) -> int:
    """A sum of per-row hashes of (user_id, item_id, timestamp): the same for the same rows in any order."""
    hashes = pd.util.hash_pandas_object(rows[["user_id", "item_id", "timestamp"]], index=False).to_numpy()
    return int(hashes.sum(dtype=np.uint64))


def check_clicks_are_events(events: LogSummary, shown: LogSummary, events_name: str, shown_name: str) -> None:
    """Raises DataError unless the impression log's clicked rows and the event log are the same rows."""
    counts = (sum(events.events_per_user.values()), sum(shown.events_per_user.values()))
    if counts[0] != counts[1] or events.checksum != shown.checksum:
        raise DataError(f"{events_name} holds {counts[0]} events and {shown_name} {counts[1]} clicked impressions"
                        f"{'' if counts[0] != counts[1] else ', but not the same (user_id, item_id, timestamp) rows'}"
                        "; the events must be exactly the clicked impressions (or leave out the event log)")


def _summarize_logs(source: EventSource, impressions: EventSource | None) -> LogSummary:
    """Pass 1: `summarize` of the events, with the impression log's user and item ids too, once its clicked rows
    are checked to be the events (an impression log alone, whose clicked rows are the events, is read once)."""
    if impressions is not None and _are_clicks_of(source, impressions):
        shown = summarize(impressions, clicked_only=True)
        if not shown.events_per_user:
            raise no_clicks_error(source.name)
        return shown
    summary = summarize(source)
    if impressions is None:
        return summary
    shown = summarize(impressions, clicked_only=True)
    check_clicks_are_events(summary, shown, source.name, impressions.name)
    return dataclasses.replace(summary, user_ids=summary.user_ids | shown.user_ids,
                               item_ids=summary.item_ids | shown.item_ids)


def _are_clicks_of(source: EventSource, impressions: EventSource) -> bool:
    """Whether `source` is the clicked rows of `impressions` (its `ClickedEventSource`), so that reading the
    impressions gives the events too."""
    return isinstance(source, ClickedEventSource) and source.impressions is impressions


def split_boundaries(source: EventSource, kept_users: set[str], kept_events: int, validation_fraction: float,
                     test_fraction: float) -> tuple[int, int]:
    """Pass 2: (validation_start, test_start) exactly as `temporal_split` computes them on the kept events."""
    positions = dict(zip(("validation", "test"), split_positions(kept_events, validation_fraction, test_fraction)))
    found: dict[str, int] = {}
    seen, first_time, last_time = 0, None, 0
    for chunk in source.chunks():
        times = chunk.events["timestamp"].to_numpy(dtype=np.int64)[chunk.events["user_id"].isin(kept_users)]
        for name, position in positions.items():
            if seen <= position < seen + len(times):
                found[name] = int(times[position - seen])
        if len(times):
            first_time = int(times[0]) if first_time is None else first_time
            last_time = int(times[-1])
        seen += len(times)
    test_start = found.get("test", last_time + 1)
    validation_start = min(found.get("validation", last_time + 1), test_start)
    if first_time is None or first_time >= validation_start:
        raise DataError(f"{source.name}: the training split is empty (all {kept_events} events are at or after "
                        f"{validation_start}); lower validation_fraction/test_fraction or provide more distinct "
                        "timestamps")
    return validation_start, test_start


class ShardWriter:
    """Writes the records of one split into files of at most `shard_size` records."""

    def __init__(self, directory: pathlib.Path, split: str, shard_size: int, compression: str) -> None:
        self.directory, self.split, self.shard_size = directory, split, shard_size
        self.compression = compression
        self.shards: list[Shard] = []
        self._writer: tf.io.TFRecordWriter | None = None
        self._in_file = 0

    def write(self, records: Sequence[bytes]) -> None:
        for record in records:
            if self._writer is None or self._in_file == self.shard_size:
                self._open_next()
            assert self._writer is not None
            self._writer.write(record)
            self._in_file += 1

    def close(self) -> list[Shard]:
        self._finish_file()
        return self.shards

    def _open_next(self) -> None:
        self._finish_file()
        suffix = ".tfrecord.gz" if self.compression == "GZIP" else ".tfrecord"
        name = f"{self.split}-{len(self.shards):05d}{suffix}"
        options = tf.io.TFRecordOptions(compression_type="" if self.compression == "NONE" else self.compression)
        self._writer = tf.io.TFRecordWriter(str(self.directory / name), options)
        self.shards.append(Shard(name, 0))

    def _finish_file(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self.shards[-1] = Shard(self.shards[-1].file, self._in_file)
            self._writer, self._in_file = None, 0


def _preprocess(source: EventSource, impressions: EventSource | None, users: pd.DataFrame, items: pd.DataFrame,
                data: config_lib.DataConfig, output_dir: pathlib.Path, shard_size: int, compression: str
                ) -> Manifest:
    """Three passes over `source` (and `impressions`): count and check, fix the split boundaries, write."""
    summary = _summarize_logs(source, impressions)
    kept = summary.kept_users(data.min_events_per_user)
    kept_events = sum(summary.events_per_user[user] for user in kept)
    if not kept:
        raise DataError(f"{source.name}: no user has at least {data.min_events_per_user} events "
                        "(data.min_events_per_user)")
    validation_start, test_start = split_boundaries(source, kept, kept_events, data.validation_fraction,
                                                    data.test_fraction)
    users, items = with_missing_rows(users, items, summary.user_ids, summary.item_ids)
    writers = {split: ShardWriter(output_dir, split, shard_size, compression) for split in SPLITS}
    shown_writers = {split: ShardWriter(output_dir, f"{IMPRESSIONS}-{split}", shard_size, compression)
                     for split in SPLITS}
    counter, witnesses, train_range = _write_splits(
        _slices(source, impressions, kept), _example_maker(users, data, impressions is not None),
        {EVENTS: writers, IMPRESSIONS: shown_writers}, validation_start, test_start)
    write_users(users, output_dir / "users.csv")
    write_items(items, output_dir / "items.csv")
    manifest = Manifest(
        directory=output_dir,
        source=source.name,
        history_length=data.history_length,
        search_history_length=data.search_history_length,
        compression=compression,
        shards={split: writer.close() for split, writer in writers.items()},
        vocab=counter.vocabularies(users, items),
        t_max=train_range.last,
        t_span=max(1, train_range.last - train_range.first),
        validation_start=validation_start,
        test_start=test_start,
        available_features=witnesses.available(source.name, users, items),
        events=kept_events,
        dropped_events=sum(summary.events_per_user.values()) - kept_events,
        dropped_users=len(summary.events_per_user) - len(kept),
        train_item_counts=dict(counter.item_ids),
        impression_shards={split: writer.close() for split, writer in shown_writers.items()},
        impression_history_length=IMPRESSION_HISTORY_LENGTH if impressions is not None else 0,
    )
    manifest.write()
    return manifest


ExampleMaker = Callable[[pd.DataFrame, "pd.DataFrame | None"], tuple[Examples, Examples]]


def _example_maker(users: pd.DataFrame, data: config_lib.DataConfig, with_impressions: bool) -> ExampleMaker:
    """(events, impressions of the same time slice) -> their examples, with the state carried between slices."""
    if not with_impressions:
        stream = ContextStream(users, data.history_length, data.search_history_length)
        return lambda events, shown: (stream.examples(events), {})
    shown_stream = ImpressionContextStream(users, data.history_length, data.search_history_length)
    return lambda events, shown: shown_stream.examples(events, shown if shown is not None else events.iloc[:0])


def _slices(source: EventSource, impressions: EventSource | None, kept: set[str]
            ) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:
    """The kept users' events (chunk by chunk) and impressions (None without), cut at common times."""
    if impressions is None:
        yield from ((_of_users(chunk.events, kept), None) for chunk in source.chunks())
        return
    shown = (_of_users(chunk.events, kept) for chunk in impressions.chunks())
    if not _are_clicks_of(source, impressions):
        yield from time_slices((_of_users(chunk.events, kept) for chunk in source.chunks()), shown)
        return
    # The events are the clicked impressions: slice the impressions alone, each slice's events are its clicked rows.
    for _, rows in time_slices(iter(()), shown):
        yield events_from_impressions(rows, source.name, allow_empty=True), rows


def _of_users(rows: pd.DataFrame, users: set[str]) -> pd.DataFrame:
    return rows[rows["user_id"].isin(users)].reset_index(drop=True)


def _write_splits(slices: Iterable[tuple[pd.DataFrame, pd.DataFrame | None]], examples_of: ExampleMaker,
                  writers: dict[str, dict[str, ShardWriter]], validation_start: int, test_start: int
                  ) -> tuple[VocabularyCounter, _Witnesses, _TimeRange]:
    """Streams the kept users' events (and impressions) once: writes each example to its split's shards, and
    counts the training split's vocabularies, the features that hold values and the training time range."""
    counter = VocabularyCounter()
    witnesses = _Witnesses()
    train_range = _TimeRange()
    boundaries = (validation_start, test_start)
    for events, shown in slices:
        if events.empty and (shown is None or shown.empty):
            continue
        event_examples, shown_examples = examples_of(events, shown)
        if shown is not None and len(shown):
            _write_by_split(writers[IMPRESSIONS], shown_examples, shown, boundaries, with_impressions=True)
            witnesses.add_impressions(shown)
        if events.empty:
            continue
        split_of = _write_by_split(writers[EVENTS], event_examples, events, boundaries, shown is not None)
        train = events[split_of == 0]
        counter.add(train)
        witnesses.add(events)
        train_range.add(train["timestamp"].to_numpy(dtype=np.int64))
    return counter, witnesses, train_range


def _write_by_split(writers: dict[str, ShardWriter], examples: Examples, rows: pd.DataFrame,
                    boundaries: tuple[int, int], with_impressions: bool) -> np.ndarray:
    """Writes each example to the shards of its row's split; returns the split index [N] of each row."""
    times = rows["timestamp"].to_numpy(dtype=np.int64)
    split_of = np.where(times < boundaries[0], 0, np.where(times < boundaries[1], 1, 2))
    for index, split in enumerate(SPLITS):
        chosen = split_of == index
        if chosen.any():
            writers[split].write(serialize_examples({name: values[chosen] for name, values in examples.items()},
                                                    with_impressions))
    return split_of


class _TimeRange:
    """The first and last timestamp of a time-ordered stream."""

    def __init__(self) -> None:
        self.first = self.last = 0
        self._empty = True

    def add(self, times: np.ndarray) -> None:
        if len(times):
            self.first = int(times[0]) if self._empty else self.first
            self.last, self._empty = int(times[-1]), False


class _Witnesses:
    """One event per optional column that has a known value, so `Dataset.available` can be asked."""

    def __init__(self) -> None:
        self.rows: dict[str, pd.DataFrame] = {}
        self.impression: pd.DataFrame | None = None

    def add_impressions(self, impressions: pd.DataFrame) -> None:
        if self.impression is None and len(impressions):
            self.impression = impressions.iloc[:1]

    def add(self, events: pd.DataFrame) -> None:
        if "any" not in self.rows:
            self.rows["any"] = events.iloc[:1]
        known = {"rating": events["rating"].notna(), "watch_time": events["watch_time"].notna(),
                 "query": events["query"].map(lambda query: isinstance(query, str) and bool(query)).astype(bool)}
        for column, mask in known.items():
            if column not in self.rows and mask.any():
                self.rows[column] = events[mask.to_numpy()].iloc[:1]

    def available(self, name: str, users: pd.DataFrame, items: pd.DataFrame) -> set[str]:
        events = pd.concat(list(self.rows.values()), ignore_index=True)
        return Dataset(name, events, users, items, impressions=self.impression).available()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.preprocess",
                                     description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (data.*: source, history lengths, split)")
    parser.add_argument("--output-dir", type=pathlib.Path, required=True, help="a new or empty folder")
    parser.add_argument("--shard-size", type=int, default=100_000, help="records per TFRecord file")
    parser.add_argument("--chunk-size", type=int, default=100_000, help="log rows read at a time")
    parser.add_argument("--events", type=pathlib.Path,
                        help="event log, CSV or TFRecord (.tfrecord[.gz]), in time order (default: the configured "
                             "source)")
    parser.add_argument("--impressions", type=pathlib.Path,
                        help="impression log, CSV or TFRecord, in time order (alone: the watches are its clicked "
                             "rows)")
    parser.add_argument("--users", type=pathlib.Path, help="CSV user table (with --events/--impressions; optional)")
    parser.add_argument("--items", type=pathlib.Path, help="CSV item table (with --events/--impressions; optional)")
    parser.add_argument("--compression", choices=COMPRESSIONS, default="GZIP")
    config_lib.add_config_flags(parser)
    return parser


@dataclasses.dataclass(frozen=True)
class Inputs:
    """What the flags name: the event log, the impression log (or None) and the user and item tables."""

    events: EventSource
    impressions: EventSource | None
    users: pd.DataFrame
    items: pd.DataFrame


def open_source(args: argparse.Namespace, config: config_lib.Config) -> Inputs:
    """The logs and tables the flags name: the CSV files, or the configured source."""
    if args.events is None and args.impressions is None:
        if args.users is not None or args.items is not None:
            raise DataError("--users and --items go with --events or --impressions (the configured source has its "
                            "own tables)")
        from trainer.data.sources import load_dataset

        dataset = load_dataset(config.data, config.synthetic)
        shown = None if dataset.impressions is None else FrameImpressionSource(
            dataset.impressions, f"{dataset.name} impressions", args.chunk_size)
        return Inputs(FrameEventSource(dataset.events, dataset.name, args.chunk_size), shown, dataset.users,
                      dataset.items)
    users = read_users(args.users) if args.users else validate_users(pd.DataFrame({"user_id": []}), "users")
    items = read_items(args.items) if args.items else validate_items(pd.DataFrame({"item_id": []}), "items")
    if args.impressions is None:
        return Inputs(open_log(args.events, False, args.chunk_size), None, users, items)
    impressions = open_log(args.impressions, True, args.chunk_size)
    events = open_log(args.events, False, args.chunk_size) if args.events else ClickedEventSource(impressions)
    return Inputs(events, impressions, users, items)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = config_lib.load_config(args.config, config_lib.overrides_from_args(args))
        inputs = open_source(args, config)
        manifest = preprocess(inputs.events, inputs.users, inputs.items, config.data, args.output_dir,
                              args.shard_size, args.compression, inputs.impressions)
    except (config_lib.ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for split in SPLITS:
        print(f"{split}: {manifest.examples(split)} examples in {len(manifest.files(split))} file(s)")
        if manifest.has_impressions:
            print(f"{split}: {manifest.examples(split, IMPRESSIONS)} impressions in "
                  f"{len(manifest.files(split, IMPRESSIONS))} file(s)")
    print(f"dropped {manifest.dropped_events} events of {manifest.dropped_users} users with fewer than "
          f"{config.data.min_events_per_user} events; manifest: {manifest.directory / MANIFEST}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
