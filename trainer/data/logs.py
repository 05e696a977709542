"""Your own logs as a source (`data.source: logs`): CSV files in the data contract's columns, read whole.

    <data_dir>/impressions.csv   user_id,item_id,timestamp,clicked,watch_time   (what was shown; clicked 1/0)
    <data_dir>/events.csv        user_id,item_id,timestamp,rating,watch_time,query
    <data_dir>/users.csv         optional: user_id,gender,age,occupation,region,language
    <data_dir>/items.csv         optional: item_id,title,genres,release_time,channel,language

Either log may instead be a TFRecord file of tf.train.Example records, impressions.tfrecord[.gz] or
events.tfrecord[.gz] (`trainer.data.record_logs`; any order, errors name the record).
At least one of impressions.csv and events.csv must be there. With impressions only, the watches
are the clicked impressions; with both, they must agree row for row (`schema.check_watches_agree`),
which lets events.csv carry what impressions cannot (ratings, search queries). Users and items that
the tables lack get rows of unknown features. For a log too large for memory, stream it with
`python -m trainer.preprocess --events events.csv --impressions impressions.csv` instead.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pandas as pd

from trainer.data.record_logs import is_record_file, record_log
from trainer.data.schema import (
    DataError,
    Dataset,
    check_watches_agree,
    events_from_impressions,
    validate_items,
    validate_users,
)
from trainer.data.table_csv import read_events, read_impressions, read_items, read_users, with_missing_rows

IMPRESSIONS_FILE = "impressions.csv"
EVENTS_FILE = "events.csv"
RECORD_NAMES = (".tfrecord", ".tfrecord.gz")  # impressions.tfrecord(.gz), events.tfrecord(.gz) instead of the CSV
USERS_FILE = "users.csv"
ITEMS_FILE = "items.csv"
_NO_ROWS = pd.DataFrame({"user_id": pd.Series([], dtype=object), "item_id": pd.Series([], dtype=object)})


def load_logs(data_dir: str | pathlib.Path) -> Dataset:
    """The `Dataset` of the CSV files in `data_dir` (see the module docstring).

    Raises:
        DataError: the folder or both log files are missing, or a file breaks the contract (file,
            column and line named).
    """
    folder = pathlib.Path(data_dir).expanduser()
    if not folder.is_dir():
        raise DataError(f"data.data_dir {str(folder)!r} is not a folder (data.source logs reads its CSV files)")
    impressions_path, events_path = _log_file(folder, IMPRESSIONS_FILE), _log_file(folder, EVENTS_FILE)
    if impressions_path is None and events_path is None:
        raise DataError(f"{folder}: holds neither {IMPRESSIONS_FILE} nor {EVENTS_FILE} (nor their .tfrecord[.gz] "
                        "forms); data.source logs needs one")
    impressions = None if impressions_path is None else _read_log(impressions_path, read_impressions, True)
    if impressions is None:
        assert events_path is not None
        events = _read_log(events_path, read_events, False)
    elif events_path is not None:
        events = _read_log(events_path, read_events, False)
        check_watches_agree(events, impressions, str(folder))
    else:
        events = events_from_impressions(impressions, str(impressions_path))
    users = read_users(folder / USERS_FILE) if (folder / USERS_FILE).is_file() else validate_users(_NO_ROWS, "users")
    items = read_items(folder / ITEMS_FILE) if (folder / ITEMS_FILE).is_file() else validate_items(_NO_ROWS, "items")
    shown = events if impressions is None else impressions
    users, items = with_missing_rows(users, items, shown["user_id"], shown["item_id"])
    return Dataset(name="logs", events=events, users=users, items=items, impressions=impressions)


def _log_file(folder: pathlib.Path, csv_name: str) -> pathlib.Path | None:
    """The one file of a log in `folder`: its CSV or TFRecord form (None: neither); two forms are an error."""
    stem = csv_name.removesuffix(".csv")
    found = [path for path in [folder / csv_name, *(folder / f"{stem}{suffix}" for suffix in RECORD_NAMES)]
             if path.is_file()]
    if len(found) > 1:
        raise DataError(f"{folder}: holds {' and '.join(path.name for path in found)}; keep one form of the {stem} log")
    return found[0] if found else None


def _read_log(path: pathlib.Path, read_csv: Callable[[pathlib.Path], pd.DataFrame], impressions: bool
              ) -> pd.DataFrame:
    if not is_record_file(path):
        return read_csv(path)
    return record_log(path, impressions).read_all()
