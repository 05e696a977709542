"""The user and item tables of the data contract as CSV files (utf-8, header required).

    users.csv: user_id,gender,age,occupation,region          (all but user_id optional; "" = unknown)
    items.csv: item_id,title,genres,release_time             (genres separated by "|")

These tables grow with the numbers of users and items, not with the log, so they are read
whole; the event log is what `trainer.data.event_stream` reads in chunks.
"""

from __future__ import annotations

import contextlib
import pathlib
import warnings
from collections.abc import Iterable, Iterator

import pandas as pd

from trainer.data.schema import DataError, validate_items, validate_users


def read_users(path: pathlib.Path) -> pd.DataFrame:
    """The validated user table of `path`; raises DataError naming the file."""
    return validate_users(_read(path, numeric=("age",)), str(path))


def read_items(path: pathlib.Path) -> pd.DataFrame:
    """The validated item table of `path` (genres split on "|"); raises DataError naming the file."""
    return validate_items(_read(path, numeric=("release_time",)), str(path))


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
    with csv_errors(str(path), "a header line is required"), warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)  # pandas would drop a row's extra fields
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values={name: [""] for name in numeric},
                           encoding="utf-8", index_col=False)


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
