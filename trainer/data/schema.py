"""The data contract of docs/DESIGN.md: an event table, a user table, an item table and, optionally, impressions.

Every source (synthetic, MovieLens, your own logs) is mapped onto these pandas tables. A
source that lacks a column leaves it missing (NaN / None / ""), and the models use only what
the data has (see `Dataset.available`).

Column dtypes after `validate_*`:
    events:      user_id str, item_id str, timestamp int64, rating float64 (NaN = missing),
                 watch_time float64 (NaN = missing), query object (str or None).
    users:       user_id str, gender str ("" = unknown), age int64 (0 = unknown),
                 occupation str, region str, language str.
    items:       item_id str, title str, genres object (list[str]), release_time int64 (0 = unknown),
                 channel str (the uploader), language str.
    impressions: user_id str, item_id str, timestamp int64, clicked bool, watch_time float64
                 (NaN = missing; 0 for an impression that was not clicked).

An impression is an item shown to a user; the clicked ones are the watches. A source with
impressions derives its event table from their clicked rows (`events_from_impressions`), so
the two cannot disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from recsys_common.contract import INT64_MAX, INT64_MIN

EVENT_COLUMNS = ("user_id", "item_id", "timestamp", "rating", "watch_time", "query")
USER_COLUMNS = ("user_id", "gender", "age", "occupation", "region", "language")
ITEM_COLUMNS = ("item_id", "title", "genres", "release_time", "channel", "language")
IMPRESSION_COLUMNS = ("user_id", "item_id", "timestamp", "clicked", "watch_time")
_TRUE, _FALSE = frozenset({"1", "true", "yes"}), frozenset({"0", "false", "no"})
SECONDS_PER_DAY = 86_400  # timestamps and release times are unix seconds
# Timestamps must be datetimes Python can represent (run bundles record them as UTC dates):
# 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP, MAX_TIMESTAMP = -62_135_596_800, 253_402_300_799


class DataError(ValueError):
    """Input data that breaks the contract; the message names the table, file or column."""


@dataclasses.dataclass
class Dataset:
    """A source mapped onto the contract.

    Attributes:
        name: the source, e.g. "synthetic" or "ml-100k".
        events: the event table, sorted by (timestamp, user_id).
        users: one row per user id (every user of `events` appears).
        items: one row per item id (every item of `events` appears).
        ground_truth: for synthetic data, the planted model (see `trainer.data.synthetic`).
        impressions: the impression table, or None when the source logs watches only; when given, `events`
            holds exactly its clicked rows.
    """

    name: str
    events: pd.DataFrame
    users: pd.DataFrame
    items: pd.DataFrame
    ground_truth: Any | None = None
    impressions: pd.DataFrame | None = None

    def available(self) -> set[str]:
        """The optional columns that hold at least one known value."""
        present = set()
        for column in ("rating", "watch_time"):
            if self.events[column].notna().any():
                present.add(column)
        if self.events["query"].map(bool, na_action="ignore").fillna(False).any():
            present.add("query")
        for column in ("gender", "occupation", "region"):
            if (self.users[column] != "").any():
                present.add(column)
        if (self.users["language"] != "").any() and (self.items["language"] != "").any():
            present.add("language")
        if (self.items["channel"] != "").any():
            present.add("channel")
        if self.impressions is not None:
            present.add("impressions")
        if (self.users["age"] > 0).any():
            present.add("age")
        if (self.items["title"] != "").any():
            present.add("title")
        if self.items["genres"].map(len).gt(0).any():
            present.add("genres")
        if (self.items["release_time"] > 0).any():
            present.add("release_time")
        return present


def validate_events(events: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checks and normalises an event table; raises DataError naming `source` and the column."""
    _require(events, ("user_id", "item_id", "timestamp"), "events", source)
    events = events.reset_index(drop=True)  # the columns below are rebuilt by position
    if events.empty:
        raise DataError(f"{source}: the event table is empty")
    out = pd.DataFrame(
        {
            "user_id": _ids(events["user_id"], "user_id", source),
            "item_id": _ids(events["item_id"], "item_id", source),
            "timestamp": _timestamps(events["timestamp"], "timestamp", source),
            "rating": _floats(events.get("rating"), len(events), "rating", source),
            "watch_time": _floats(events.get("watch_time"), len(events), "watch_time", source),
            "query": _optional_strings(events.get("query"), len(events)),
        }
    )
    if (out["watch_time"] < 0).any():
        row = int(np.flatnonzero(out["watch_time"].to_numpy() < 0)[0])
        raise DataError(f"{source}: watch_time must be >= 0, row {row} has {out['watch_time'].iloc[row]}")
    return out.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)


def validate_users(users: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checks and normalises a user table (unknown strings become "", unknown age 0)."""
    _require(users, ("user_id",), "users", source)
    users = users.reset_index(drop=True)  # the columns below are rebuilt by position
    out = pd.DataFrame({"user_id": _ids(users["user_id"], "user_id", source)})
    for column in ("gender", "occupation", "region", "language"):
        out[column] = _strings(users.get(column), len(users))
    age = users.get("age")
    out["age"] = 0 if age is None else _integers(age.fillna(0), "age", source)
    _unique(out, "user_id", "users", source)
    return out[list(USER_COLUMNS)]


def validate_items(items: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checks and normalises an item table (genres become lists, unknown release_time 0)."""
    _require(items, ("item_id",), "items", source)
    items = items.reset_index(drop=True)  # the columns below are rebuilt by position
    out = pd.DataFrame({"item_id": _ids(items["item_id"], "item_id", source)})
    out["title"] = _strings(items.get("title"), len(items))
    genres = items.get("genres")
    out["genres"] = [[] for _ in range(len(items))] if genres is None else [_genre_list(g) for g in genres]
    release = items.get("release_time")
    out["release_time"] = 0 if release is None else _integers(release.fillna(0), "release_time", source)
    for column in ("channel", "language"):
        out[column] = _strings(items.get(column), len(items))
    _unique(out, "item_id", "items", source)
    return out[list(ITEM_COLUMNS)]


def validate_impressions(impressions: pd.DataFrame, source: str) -> pd.DataFrame:
    """Checks and normalises an impression table; raises DataError naming `source`, the column and the row.

    `clicked` is 1/0, true/false or yes/no (any case); `timestamp` is unix seconds from MIN_TIMESTAMP to
    MAX_TIMESTAMP (years 1 to 9999); `watch_time` is optional, >= 0, and must be 0 or
    missing where the item was not clicked (a watch without a click is a logging error, not a signal).
    """
    _require(impressions, ("user_id", "item_id", "timestamp", "clicked"), "impressions", source)
    impressions = impressions.reset_index(drop=True)
    if impressions.empty:
        raise DataError(f"{source}: the impression table is empty")
    out = pd.DataFrame(
        {
            "user_id": _ids(impressions["user_id"], "user_id", source),
            "item_id": _ids(impressions["item_id"], "item_id", source),
            "timestamp": _timestamps(impressions["timestamp"], "timestamp", source),
            "clicked": _booleans(impressions["clicked"], "clicked", source),
            "watch_time": _floats(impressions.get("watch_time"), len(impressions), "watch_time", source),
        }
    )
    watch_time = out["watch_time"].to_numpy()
    _refuse_rows(watch_time < 0, f"{source}: watch_time must be >= 0", out["watch_time"])
    _refuse_rows(~out["clicked"].to_numpy() & (watch_time > 0),
                 f"{source}: watch_time must be 0 or missing where clicked is false", out["watch_time"])
    unclicked = ~out["clicked"]
    out.loc[unclicked, "watch_time"] = 0.0
    return out.sort_values(["timestamp", "user_id"], kind="stable").reset_index(drop=True)


def events_from_impressions(impressions: pd.DataFrame, source: str, allow_empty: bool = False) -> pd.DataFrame:
    """The event table of a validated impression table: its clicked rows (no ratings, no queries).

    Args:
        allow_empty: with no clicked impression, return an empty event table instead of raising (a chunk of a
            longer log).

    Raises:
        DataError: no impression was clicked (unless `allow_empty`).
    """
    clicked = impressions[impressions["clicked"]]
    if clicked.empty:
        if allow_empty:
            return _no_events()
        raise no_clicks_error(source)
    return validate_events(clicked.drop(columns="clicked"), source)


def _no_events() -> pd.DataFrame:
    """An event table without rows, in the column types `validate_events` gives."""
    return pd.DataFrame({"user_id": pd.Series([], dtype=str), "item_id": pd.Series([], dtype=str),
                         "timestamp": pd.Series([], dtype=np.int64), "rating": pd.Series([], dtype=np.float64),
                         "watch_time": pd.Series([], dtype=np.float64), "query": pd.Series([], dtype=object)})


def no_clicks_error(source: str) -> DataError:
    """The error of an impression log in which nothing is clicked."""
    return DataError(f"{source}: no impression is clicked, so there are no watches to learn from")


def check_watches_agree(events: pd.DataFrame, impressions: pd.DataFrame, source: str) -> None:
    """Raises DataError unless the clicked impressions and the events are the same (user, item, timestamp) rows."""
    key = ["user_id", "item_id", "timestamp"]
    clicked = impressions.loc[impressions["clicked"], key]
    merged = events[key].merge(clicked, on=key, how="outer", indicator=True)
    only_events = merged[merged["_merge"] == "left_only"]
    only_clicks = merged[merged["_merge"] == "right_only"]
    for rows, where, other in ((only_events, "the event table", "a clicked impression"),
                               (only_clicks, "a clicked impression", "the event table")):
        if len(rows):
            first = rows.iloc[0]
            raise DataError(f"{source}: {len(rows)} watch(es) of {where} have no match in {other}, e.g. user "
                            f"{first['user_id']!r} item {first['item_id']!r} at {first['timestamp']}; the events "
                            "must be exactly the clicked impressions")


def _booleans(column: pd.Series, name: str, source: str) -> pd.Series:
    if column.dtype == bool:
        return column.reset_index(drop=True)
    text = column.map(lambda value: str(value).strip().lower(), na_action="ignore")
    text = text.replace({"1.0": "1", "0.0": "0"})
    _refuse_values(~text.isin(_TRUE | _FALSE), column, f"{source}: {name} must be 1/0, true/false or yes/no")
    return text.isin(_TRUE).reset_index(drop=True)


def _refuse_rows(bad: np.ndarray, message: str, column: pd.Series) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"{message}; row {row} has {column.iloc[row]} ({int(bad.sum())} such row(s))")


def _require(table: pd.DataFrame, columns: tuple[str, ...], name: str, source: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise DataError(f"{source}: the {name} table lacks column(s) {missing}; it has {list(table.columns)}")


def _ids(column: pd.Series, name: str, source: str) -> pd.Series:
    if column.isna().any():
        row = int(np.flatnonzero(column.isna().to_numpy())[0])
        raise DataError(f"{source}: {name} is missing in row {row}")
    ids = column.astype(str).str.strip()
    if (ids == "").any():
        row = int(np.flatnonzero((ids == "").to_numpy())[0])
        raise DataError(f"{source}: {name} is empty in row {row}")
    return ids


def _integers(column: pd.Series, name: str, source: str) -> pd.Series:
    numbers = _whole_numbers(column, name, source)
    _refuse_values(_beyond_int64(numbers), column,
                   f"{source}: {name} must be an integer from {INT64_MIN} to {INT64_MAX}")
    return numbers.astype(np.int64)


def _timestamps(column: pd.Series, name: str, source: str) -> pd.Series:
    numbers = _whole_numbers(column, name, source)
    values = numbers.to_numpy(dtype=np.float64)  # exact near the bounds, and beyond them
    _refuse_values((values < MIN_TIMESTAMP) | (values > MAX_TIMESTAMP), column,
                   f"{source}: {name} must be unix seconds from {MIN_TIMESTAMP} to {MAX_TIMESTAMP} (years 1 to 9999)")
    return numbers.astype(np.int64)


def _whole_numbers(column: pd.Series, name: str, source: str) -> pd.Series:
    numbers = pd.to_numeric(column, errors="coerce")
    _refuse_values(numbers.isna() | (numbers != np.floor(numbers)), column, f"{source}: {name} must be an integer")
    return numbers


def _beyond_int64(numbers: pd.Series) -> np.ndarray:
    """Where a parsed integer does not fit int64 (pandas parses such text as uint64 or float64; astype wraps it)."""
    values = numbers.to_numpy()
    if values.dtype.kind == "u":
        return values > INT64_MAX
    if values.dtype.kind == "f":
        return (values < -(2.0**63)) | (values >= 2.0**63)
    return np.zeros(len(values), dtype=bool)


def _refuse_values(bad: pd.Series | np.ndarray, column: pd.Series, message: str) -> None:
    flags = np.asarray(bad, dtype=bool)
    if flags.any():
        row = int(np.flatnonzero(flags)[0])
        raise DataError(f"{message}, row {row} has {column.iloc[row]!r}")


def _floats(column: pd.Series | None, length: int, name: str, source: str) -> pd.Series:
    if column is None:
        return pd.Series(np.full(length, np.nan))
    numbers = pd.to_numeric(column, errors="coerce")
    bad = (numbers.isna() & column.notna()) | np.isinf(numbers.to_numpy(dtype=np.float64))
    _refuse_values(bad, column, f"{source}: {name} must be a finite number")
    return numbers.astype(np.float64).reset_index(drop=True)


def _strings(column: pd.Series | None, length: int) -> pd.Series:
    if column is None:
        return pd.Series([""] * length, dtype=object)
    return column.fillna("").astype(str).str.strip().reset_index(drop=True)


def _optional_strings(column: pd.Series | None, length: int) -> pd.Series:
    if column is None:
        return pd.Series([None] * length, dtype=object)
    return column.map(lambda q: q if isinstance(q, str) and q.strip() else None).reset_index(drop=True)


def _genre_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [g for g in (part.strip() for part in value.split("|")) if g]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return [str(g) for g in value]


def _unique(table: pd.DataFrame, column: str, name: str, source: str) -> None:
    duplicated = table[column].duplicated()
    if duplicated.any():
        value = table[column][duplicated].iloc[0]
        raise DataError(f"{source}: the {name} table repeats {column} {value!r}")
