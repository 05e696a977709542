"""The user, item and impression tables of the data contract as CSV files (utf-8, header required).

    users.csv:       user_id,gender,age,occupation,region,language        (all but user_id optional; "" = unknown)
    items.csv:       item_id,title,genres,release_time,channel,language   (genres separated by "|")
    impressions.csv: user_id,item_id,timestamp,clicked,watch_time         (clicked 1/0; watch_time optional)

These tables grow with the numbers of users and items, not with the log, so they are read
whole; the event log is what `trainer.data.event_stream` reads in chunks. A blank (or
whitespace-only) line is not a row: one between rows is an error naming its line; blank lines at
the end are counted and logged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import pathlib
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pandas as pd

from trainer.data.schema import DataError, validate_events, validate_impressions, validate_items, validate_users
from trainer.run import LOGGER_NAME

_ROW = re.compile(r"\brow (\d+)\b")


def read_users(path: pathlib.Path) -> pd.DataFrame:
    """The validated user table of `path`; raises DataError naming the file."""
    return validate_users(_read(path, numeric=("age",)), str(path))


def read_items(path: pathlib.Path) -> pd.DataFrame:
    """The validated item table of `path` (genres split on "|"); raises DataError naming the file."""
    return validate_items(_read(path, numeric=("release_time",)), str(path))


def read_impressions(path: pathlib.Path) -> pd.DataFrame:
    """The validated impression table of `path`; errors name the file, the column and the line (header = line 1)."""
    return _with_line_numbers(validate_impressions, _read(path, numeric=("timestamp", "watch_time")), path)


def read_events(path: pathlib.Path) -> pd.DataFrame:
    """The validated event table of `path`, in any order (`trainer.data.event_stream` streams a sorted one)."""
    return _with_line_numbers(validate_events, _read(path, numeric=("timestamp", "rating", "watch_time")), path)


def _with_line_numbers(validate: Callable[[pd.DataFrame, str], pd.DataFrame], table: pd.DataFrame,
                       path: pathlib.Path) -> pd.DataFrame:
    """`validate(table)`, its errors' 0-based data rows turned into the file's lines (the header is line 1)."""
    try:
        return validate(table, str(path))
    except DataError as error:
        raise DataError(_ROW.sub(lambda match: f"line {int(match.group(1)) + 2}", str(error))) from None


class LineCountingReader(io.RawIOBase):
    """A binary file that counts the lines read through it, so that a parser reading it counts them in its pass."""

    def __init__(self, raw: io.BufferedIOBase) -> None:
        super().__init__()
        self._raw = raw
        self._newlines = 0
        self._last = b"\n"

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer) or 0
        if count:
            chunk = memoryview(buffer).cast("B")[:count]
            self._newlines += bytes(chunk).count(b"\n")
            self._last = bytes(chunk[-1:])
        return count

    @property
    def lines(self) -> int:
        """The lines read so far, a last line without a newline included."""
        return self._newlines + (self._last != b"\n")


def check_blank_lines(path: pathlib.Path, rows: int, header_lines: int, log: logging.Logger, lines: int) -> None:
    """After a parser that skips blank lines read `rows` rows from `path`: no blank line was skipped silently.

    Args:
        path: the file, named in messages (and re-read only when it has blank lines).
        rows: the rows the parser read.
        header_lines: the lines before the first row.
        log: where trailing blank lines are reported.
        lines: the file's line count (`LineCountingReader.lines` of the parser's pass), header included.

    Raises:
        DataError: a blank line comes before the last row (naming its 1-based line number).
    Blank lines after the last row are logged with their count.
    """
    lines -= header_lines
    if lines == rows:
        return
    last_row_line = first_blank = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if raw.strip():  # pandas skips whitespace-only lines too
                last_row_line = number
            elif not first_blank:
                first_blank = number
            if first_blank and last_row_line > first_blank:
                raise blank_line_error(path, first_blank)
    if lines > rows:
        log.warning("%s: ignored %d blank line(s) at the end of the file", path, lines - rows)


def blank_line_error(path: pathlib.Path, line: int) -> DataError:
    return DataError(f"{path} line {line}: a blank line (every line must be a row; remove it)")


def write_users(users: pd.DataFrame, path: pathlib.Path) -> None:
    users.to_csv(path, index=False)


def write_items(items: pd.DataFrame, path: pathlib.Path) -> None:
    table = items.copy()
    table["genres"] = ["|".join(genres) for genres in table["genres"]]
    table.to_csv(path, index=False)


def with_missing_rows(users: pd.DataFrame, items: pd.DataFrame, user_ids: Iterable[str],
                      item_ids: Iterable[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The tables plus a row with unknown features for each of `user_ids` / `item_ids` they lack."""
    missing_users = sorted(set(user_ids) - set(users["user_id"]))
    if missing_users:
        users = pd.concat([users, validate_users(pd.DataFrame({"user_id": missing_users}), "users")],
                          ignore_index=True)
    missing_items = sorted(set(item_ids) - set(items["item_id"]))
    if missing_items:
        items = pd.concat([items, validate_items(pd.DataFrame({"item_id": missing_items}), "items")],
                          ignore_index=True)
    return users, items


def _read(path: pathlib.Path, numeric: tuple[str, ...]) -> pd.DataFrame:
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"table {path} does not exist")
    with csv_errors(str(path), "a header line is required"), warnings.catch_warnings(), path.open("rb") as raw:
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas would drop a row's extra fields
        counter = LineCountingReader(raw)
        table = pd.read_csv(io.BufferedReader(counter), dtype=str, keep_default_na=False,
                            na_values={name: [""] for name in numeric}, encoding="utf-8", index_col=False)
    check_blank_lines(path, len(table), header_lines=1, log=logging.getLogger(LOGGER_NAME), lines=counter.lines)
    return table


@contextlib.contextmanager
def csv_errors(name: str, empty_hint: str) -> Iterator[None]:
    """Turns pandas' CSV reading errors into DataErrors naming the file `name`.

    A ParserWarning is an error here: it is raised (by `warnings.simplefilter("error", ...)`) for a row with
    more fields than the header, which pandas would otherwise drop silently.
    """
    try:
        yield
    except pd.errors.ParserWarning as warning:
        raise DataError(f"{name}: malformed CSV: a row has more fields than the header ({warning})") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{name}: the file is empty ({empty_hint})") from None
    except pd.errors.ParserError as error:
        raise DataError(f"{name}: malformed CSV: {error}") from None
    except UnicodeDecodeError as error:
        raise DataError(f"{name}: not utf-8 text ({error.reason} at byte {error.start})") from None
