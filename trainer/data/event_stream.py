"""The event log (or impression log) read in chunks: a CSV file in the data contract's columns, or a loaded table.

A streaming reader never holds the whole log, so it needs the log in time order (the order
a logging system appends it in): every chunk is validated like `schema.validate_events`,
and a timestamp earlier than the one before it is an error that names the line. Each chunk
comes back sorted by (timestamp, user_id) with the file order kept among ties, exactly as
`validate_events` sorts a whole table, so chunk after chunk is the same sequence of events.

CSV layout (header required; extra columns are ignored):
    user_id,item_id,timestamp,rating,watch_time,query
An empty rating, watch_time or query is missing; ids and timestamps must be present.
An impression log (`CsvImpressionSource`) has the impression table's columns instead
(user_id,item_id,timestamp,clicked,watch_time, see `trainer.data.schema.validate_impressions`), is read the
same way, and `ClickedEventSource` turns it into the event log of its clicked rows.
Line numbers in errors count the header as line 1 (a quoted field spanning lines shifts them). An empty row
(a blank line) before a later row is an error; the empty rows that end the file are dropped with a warning.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import warnings
from collections.abc import Callable, Iterator
from typing import ClassVar, Protocol

import numpy as np
import pandas as pd

from trainer.data.schema import (
    EVENT_COLUMNS,
    IMPRESSION_COLUMNS,
    DataError,
    events_from_impressions,
    no_clicks_error,
    validate_events,
    validate_impressions,
)
from trainer.data.table_csv import csv_errors
from trainer.run import LOGGER_NAME

LOGGER = logging.getLogger(LOGGER_NAME)
Validate = Callable[[pd.DataFrame, str], pd.DataFrame]
_ROW = re.compile(r"\brow (\d+)\b")


@dataclasses.dataclass(frozen=True)
class EventChunk:
    """Consecutive events of the log.

    Attributes:
        events: validated contract columns, sorted by (timestamp, user_id), ties in log order.
        first_row: the 0-based position of the chunk's first event in the log.
    """

    events: pd.DataFrame
    first_row: int


class EventSource(Protocol):
    """A log that can be read from the start, chunk by chunk, any number of times."""

    @property
    def name(self) -> str:
        """What errors call the log (its path)."""
        ...

    def chunks(self) -> Iterator[EventChunk]:
        """The log in time order; raises DataError naming the place of bad or unsorted rows."""
        ...


def csv_line(row: int) -> str:
    """The file line of 0-based data row `row` (line 1 is the header)."""
    return f"line {row + 2}"


@dataclasses.dataclass
class LogFile:
    """A log file on disk, read `chunk_size` rows at a time; a subclass gives its raw chunks (`_raw_chunks`),
    what the log is and how errors name a row's place."""

    path: pathlib.Path
    chunk_size: int = 100_000
    log: ClassVar[str]  # what errors call the log, e.g. "event log"
    validate: ClassVar[Validate]
    place: ClassVar[Callable[[int], str]]  # 0-based row -> where errors say it is ("line 7", "record 5")
    rows: ClassVar[str]  # what the log's rows are called: "rows", "records"

    def __post_init__(self) -> None:
        self.path = pathlib.Path(self.path)
        if self.chunk_size <= 0:
            raise DataError(f"chunk_size must be > 0, got {self.chunk_size}")
        if not self.path.is_file():
            raise DataError(f"{self.log} {self.path} does not exist")

    @property
    def name(self) -> str:
        return str(self.path)

    def chunks(self) -> Iterator[EventChunk]:
        place = type(self).place
        order = OrderCheck(self.name, place)
        first_row = 0
        for raw in self._raw_chunks():
            events = validated(type(self).validate, raw, self.name, first_row, place)
            order.check(raw, first_row)
            yield EventChunk(events, first_row)
            first_row += len(raw)
        if first_row == 0:
            raise self.empty_error()

    def empty_error(self) -> DataError:
        """The error of a log without a single row."""
        return DataError(f"{self.name}: the {self.log} has no {self.rows}")

    def _raw_chunks(self) -> Iterator[pd.DataFrame]:
        """The log's rows as read, `chunk_size` at a time, in the columns that `validate` takes."""
        raise NotImplementedError


@dataclasses.dataclass
class CsvEventSource(LogFile):
    """A CSV event log on disk (utf-8), read `chunk_size` rows at a time."""

    log: ClassVar[str] = "event log"
    columns: ClassVar[tuple[str, ...]] = EVENT_COLUMNS
    optional_columns: ClassVar[tuple[str, ...]] = ("rating", "watch_time", "query")
    validate: ClassVar[Validate] = staticmethod(validate_events)
    place: ClassVar[Callable[[int], str]] = staticmethod(csv_line)
    rows: ClassVar[str] = "rows"

    def _raw_chunks(self) -> Iterator[pd.DataFrame]:
        """Blank lines stay rows while parsing (so that line numbers stay true): one before a later row is an
        error, the blank lines that end the file are dropped with a warning."""
        blank_since: int | None = None  # the first row of a run of empty rows that no row has followed yet
        first_row = 0
        with csv_errors(self.name, f"expected a header {','.join(self.columns)}"):
            reader = pd.read_csv(self.path, chunksize=self.chunk_size, dtype=str, keep_default_na=False,
                                 na_values={column: [""] for column in self.optional_columns}, encoding="utf-8",
                                 index_col=False, skip_blank_lines=False)
            with reader:
                while (chunk := _next_chunk(reader)) is not None:
                    rows, blank_since = self._without_trailing_empty_rows(chunk, first_row, blank_since)
                    first_row += len(chunk)
                    if len(rows):
                        yield rows
        if blank_since is not None:
            LOGGER.warning("%s: ignored %d empty row(s) at the end of the file", self.name, first_row - blank_since)

    def _without_trailing_empty_rows(self, chunk: pd.DataFrame, first_row: int,
                                     blank_since: int | None) -> tuple[pd.DataFrame, int | None]:
        """`chunk` (the file's rows from `first_row` on) less the empty rows it ends with, and the row where the
        run of empty rows that no row has followed yet begins (`blank_since` carries it from earlier chunks).

        Raises:
            DataError: naming the line of an empty row that a later row follows.
        """
        empty = _empty_rows(chunk)
        filled = np.flatnonzero(~empty)
        if len(filled):
            before_a_row = np.flatnonzero(empty[:filled[-1]])
            if blank_since is not None or len(before_a_row):
                line = blank_since if blank_since is not None else first_row + int(before_a_row[0])
                raise DataError(f"{self.name} {csv_line(line)}: an empty row (a blank line, or only commas); every "
                                "line must be a row, remove it")
            blank_since = None
        if not empty[-1]:
            return chunk, blank_since
        trailing = len(filled) and int(filled[-1]) + 1
        return chunk.iloc[:trailing], first_row + trailing if blank_since is None else blank_since


@dataclasses.dataclass
class CsvImpressionSource(CsvEventSource):
    """A CSV impression log on disk (utf-8, the impression table's columns), read `chunk_size` rows at a time."""

    log: ClassVar[str] = "impression log"
    columns: ClassVar[tuple[str, ...]] = IMPRESSION_COLUMNS
    optional_columns: ClassVar[tuple[str, ...]] = ("watch_time",)
    validate: ClassVar[Validate] = staticmethod(validate_impressions)


@dataclasses.dataclass
class FrameEventSource:
    """A loaded event table (e.g. `Dataset.events`) served in chunks; validated and sorted once, when made."""

    events: pd.DataFrame
    name: str = "events"
    chunk_size: int = 100_000
    validate: ClassVar[Validate] = staticmethod(validate_events)

    def __post_init__(self) -> None:
        if self.chunk_size <= 0:
            raise DataError(f"chunk_size must be > 0, got {self.chunk_size}")
        self.events = type(self).validate(self.events, self.name)

    def chunks(self) -> Iterator[EventChunk]:
        for start in range(0, len(self.events), self.chunk_size):
            yield EventChunk(self.events.iloc[start:start + self.chunk_size].reset_index(drop=True), start)


@dataclasses.dataclass
class FrameImpressionSource(FrameEventSource):
    """A loaded impression table (e.g. `Dataset.impressions`) in chunks (`EventChunk.events` holds impressions)."""

    name: str = "impressions"
    validate: ClassVar[Validate] = staticmethod(validate_impressions)


@dataclasses.dataclass
class ClickedEventSource:
    """The event log of an impression log: its clicked impressions (no ratings, no queries), as
    `schema.events_from_impressions` makes the event table of a loaded impression table."""

    impressions: EventSource

    @property
    def name(self) -> str:
        return self.impressions.name

    def chunks(self) -> Iterator[EventChunk]:
        clicks = 0
        for chunk in self.impressions.chunks():
            events = events_from_impressions(chunk.events, self.name, allow_empty=True)
            if len(events):
                clicks += len(events)
                yield EventChunk(events, chunk.first_row)
        if not clicks:
            raise no_clicks_error(self.name)


class OrderCheck:
    """Remembers the last timestamp seen, so that the whole log is checked to be in time order.

    Args:
        name: what errors call the log.
        place: 0-based row -> where errors say it is ("line 7", "record 5").
    """

    def __init__(self, name: str, place: Callable[[int], str]) -> None:
        self.name, self.place = name, place
        self.last: int | None = None

    def check(self, raw: pd.DataFrame, first_row: int) -> None:
        times = pd.to_numeric(raw["timestamp"]).to_numpy(dtype=np.int64)
        offset = 0 if self.last is None else 1
        joined = times if self.last is None else np.concatenate([[self.last], times])
        backwards = np.flatnonzero(np.diff(joined) < 0)
        if len(backwards):
            at = int(backwards[0]) + 1
            raise DataError(
                f"{self.name}: {self.place(first_row + at - offset)}: timestamp {joined[at]} is earlier than the "
                f"row before ({joined[at - 1]}); streaming needs the log in time order (sort it by timestamp first)"
            )
        self.last = int(times[-1])


def _empty_rows(chunk: pd.DataFrame) -> np.ndarray:
    """[rows] bool: the rows whose every field is empty or whitespace (pandas reads a blank line as one)."""
    empty = np.ones(len(chunk), dtype=bool)
    for column in chunk.columns:  # column by column, on the rows still empty so far: most rows leave at once
        rows = np.flatnonzero(empty)
        values = chunk[column].iloc[rows]
        empty[rows] = (values.isna() | values.str.strip().eq("")).to_numpy()
    return empty


def _next_chunk(reader: Iterator[pd.DataFrame]) -> pd.DataFrame | None:
    """The next chunk, None at the end; a row longer than the header raises (pandas only warns and drops it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        return next(reader, None)


def validated(validate: Validate, raw: pd.DataFrame, name: str, first_row: int,
              place: Callable[[int], str]) -> pd.DataFrame:
    """`validate` of one chunk, with its row numbers turned into the log's places (`place` of the log's row)."""
    try:
        return validate(raw, name)
    except DataError as error:
        message = _ROW.sub(lambda match: place(first_row + int(match.group(1))), str(error))
        raise DataError(message) from None
