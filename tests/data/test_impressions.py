"""The impression table of the data contract: validation, CSV files and the `logs` source."""

from __future__ import annotations

import datetime
import io
import pathlib
import textwrap

import numpy as np
import pandas as pd
import pytest

from trainer.config import DataConfig, SyntheticConfig
from trainer.data.logs import load_logs
from trainer.data.schema import DataError, check_watches_agree, events_from_impressions, validate_impressions
from trainer.data.sources import drop_sparse_users, load_dataset
from trainer.data.table_csv import read_impressions

HEADER = "user_id,item_id,timestamp,clicked,watch_time\n"
GOOD = HEADER + "u1,a,20,1,30.5\nu1,b,20,0,\nu2,a,10,true,12\nu2,c,10,FALSE,0\nu1,c,30,yes,\n"
EVENTS_HEADER = "user_id,item_id,timestamp,rating,watch_time,query\n"
FIRST_SECOND = int(datetime.datetime(1, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
LAST_SECOND = int(datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc).timestamp())
TIMESTAMP_RULE = f"timestamp must be unix seconds from {FIRST_SECOND} to {LAST_SECOND} (years 1 to 9999)"


def _write(folder: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


def test_a_valid_table_is_normalised_and_sorted(tmp_path: pathlib.Path) -> None:
    table = read_impressions(_write(tmp_path, "impressions.csv", GOOD))
    assert table["timestamp"].tolist() == [10, 10, 20, 20, 30]
    assert table["clicked"].tolist() == [True, False, True, False, True]
    np.testing.assert_array_equal(table["watch_time"].to_numpy(), [12.0, 0.0, 30.5, 0.0, np.nan])
    assert table["clicked"].dtype == bool


@pytest.mark.parametrize(("body", "message"), [
    ("u1,a,20,maybe,1\n", "clicked must be 1/0, true/false or yes/no, row 0 has 'maybe'"),
    ("u1,a,20,1,1\nu1,b,20,y,1\n", "clicked must be 1/0, true/false or yes/no, row 1 has 'y'"),
    ("u1,a,20,1,1\nu1,b,x,0,\n", "timestamp must be an integer, row 1 has"),
    ("u1,a,20,1,-3\n", "watch_time must be >= 0; row 0 has -3.0"),
    ("u1,a,20,1,3\nu1,b,20,0,5\n", "watch_time must be 0 or missing where clicked is false; row 1 has 5.0"),
    (",a,20,1,3\n", "user_id is empty in row 0"),
])
def test_bad_rows_are_refused_naming_column_and_row(body: str, message: str) -> None:
    raw = pd.read_csv(io.StringIO(HEADER + body), dtype=str, keep_default_na=False, na_values={"watch_time": [""]})
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate_impressions(raw, "imp")


def test_csv_errors_name_the_file_line(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "impressions.csv", HEADER + "u1,a,20,1,3\nu1,b,20,0,5\n")
    with pytest.raises(DataError, match=rf"{path}: watch_time must be 0 or missing where clicked is false; line 3 "):
        read_impressions(path)


@pytest.mark.parametrize(("file", "body", "message"), [
    ("events.csv", "u1,a,20,4,,\nu1,b,99999999999999999999,4,,\n",
     f"{TIMESTAMP_RULE}, line 3 has '99999999999999999999'"),
    ("events.csv", "u1,a,9223372036854775808,4,,\n", f"{TIMESTAMP_RULE}, line 2 has '9223372036854775808'"),
    ("events.csv", "u1,a,-99999999999999999999,4,,\n", f"{TIMESTAMP_RULE}, line 2 has '-99999999999999999999'"),
    ("events.csv", "u1,a,-100000000000,4,,\n", f"{TIMESTAMP_RULE}, line 2 has '-100000000000'"),
    ("events.csv", f"u1,a,{FIRST_SECOND - 1},4,,\n", f"{TIMESTAMP_RULE}, line 2 has '{FIRST_SECOND - 1}'"),
    ("events.csv", f"u1,a,{LAST_SECOND + 1},4,,\n", f"{TIMESTAMP_RULE}, line 2 has '{LAST_SECOND + 1}'"),
    ("impressions.csv", "u1,a,1000000000000000,1,\n", f"{TIMESTAMP_RULE}, line 2 has '1000000000000000'"),
    ("events.csv", "u1,a,20,inf,,\n", "rating must be a finite number, line 2 has 'inf'"),
    ("events.csv", "u1,a,20,4,,\nu1,b,20,-inf,,\n", "rating must be a finite number, line 3 has '-inf'"),
    ("events.csv", "u1,a,20,1e400,,\n", "rating must be a finite number, line 2 has '1e400'"),
    ("events.csv", "u1,a,20,nan,,\n", "rating must be a finite number, line 2 has 'nan'"),
    ("events.csv", "u1,a,20,,inf,\n", "watch_time must be a finite number, line 2 has 'inf'"),
    ("impressions.csv", "u1,a,20,1,inf\n", "watch_time must be a finite number, line 2 has 'inf'"),
    ("impressions.csv", "u1,a,20,oui,1\n", "clicked must be 1/0, true/false or yes/no, line 2 has 'oui'"),
])
def test_bad_log_values_name_file_line_and_column(tmp_path: pathlib.Path, file: str, body: str, message: str) -> None:
    _write(tmp_path, file, (HEADER if file == "impressions.csv" else EVENTS_HEADER) + body)
    with pytest.raises(DataError) as error:
        load_logs(tmp_path)
    assert f"{tmp_path / file}: {message}" in str(error.value)


def test_timestamps_at_the_ends_of_the_datetime_range_are_kept(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "events.csv", f"{EVENTS_HEADER}u1,a,{LAST_SECOND},,,\nu1,b,{FIRST_SECOND},,,\n")
    assert load_logs(tmp_path).events["timestamp"].tolist() == [FIRST_SECOND, LAST_SECOND]


def test_a_missing_column_is_named(tmp_path: pathlib.Path) -> None:
    path = _write(tmp_path, "impressions.csv", "user_id,item_id,timestamp\nu1,a,1\n")
    with pytest.raises(DataError, match=r"lacks column\(s\) \['clicked'\]"):
        read_impressions(path)


def test_the_watches_are_the_clicked_impressions() -> None:
    impressions = validate_impressions(pd.DataFrame({
        "user_id": ["u1", "u1", "u2"], "item_id": ["a", "b", "a"], "timestamp": [5, 5, 7],
        "clicked": [True, False, True], "watch_time": [3.0, 0.0, np.nan]}), "t")
    events = events_from_impressions(impressions, "t")
    assert list(zip(events["user_id"], events["item_id"], events["timestamp"])) == [("u1", "a", 5), ("u2", "a", 7)]
    assert events["rating"].isna().all() and events["query"].isna().all()
    check_watches_agree(events, impressions, "t")
    with pytest.raises(DataError, match=r"1 watch\(es\) of the event table have no match in a clicked impression, "
                                        r"e.g. user 'u2' item 'a' at 8"):
        check_watches_agree(events.assign(timestamp=[5, 8]), impressions, "t")
    with pytest.raises(DataError, match="no impression is clicked"):
        events_from_impressions(impressions.assign(clicked=False), "t")
    none = events_from_impressions(impressions.assign(clicked=False), "t", allow_empty=True)
    assert none.empty and none.dtypes.equals(events.dtypes)


def test_the_logs_source_reads_impressions_and_optional_tables(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "impressions.csv", GOOD)
    _write(tmp_path, "items.csv", "item_id,title,channel,language\na,Alpha,ch1,en\nb,Beta,ch2,de\n")
    _write(tmp_path, "users.csv", "user_id,language\nu1,en\n")
    dataset = load_logs(tmp_path)
    assert dataset.impressions is not None and len(dataset.impressions) == 5
    assert sorted(zip(dataset.events["user_id"], dataset.events["item_id"])) == [("u1", "a"), ("u1", "c"), ("u2", "a")]
    assert sorted(dataset.items["item_id"]) == ["a", "b", "c"], "an item only shown still gets a row"
    assert sorted(dataset.users["user_id"]) == ["u1", "u2"]
    assert dataset.items.set_index("item_id").loc["b", "channel"] == "ch2"
    assert {"impressions", "channel", "language", "title"} <= dataset.available()


def test_the_logs_source_checks_events_against_impressions(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "impressions.csv", GOOD)
    _write(tmp_path, "events.csv", "user_id,item_id,timestamp,rating,watch_time,query\nu1,a,20,,30.5,cats\n")
    with pytest.raises(DataError, match=r"2 watch\(es\) of a clicked impression have no match in the event table"):
        load_logs(tmp_path)


def test_the_logs_source_without_impressions_keeps_working(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "events.csv", "user_id,item_id,timestamp,rating,watch_time,query\nu1,a,20,4,,\nu1,b,10,5,,\n")
    dataset = load_dataset(DataConfig(source="logs", data_dir=str(tmp_path)), SyntheticConfig())
    assert dataset.impressions is None and "impressions" not in dataset.available()
    assert dataset.events["item_id"].tolist() == ["b", "a"]


def test_the_logs_source_refuses_an_empty_folder(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DataError, match="holds neither impressions.csv nor events.csv"):
        load_logs(tmp_path)


def test_dropping_sparse_users_drops_their_impressions_too(tmp_path: pathlib.Path) -> None:
    _write(tmp_path, "impressions.csv", GOOD)
    dataset = drop_sparse_users(load_logs(tmp_path), min_events_per_user=2)
    assert dataset.impressions is not None
    assert set(dataset.impressions["user_id"]) == {"u1"} and set(dataset.events["user_id"]) == {"u1"}


def test_the_youtube_config_turns_the_world_on() -> None:
    from trainer.config import load_config

    config = load_config(pathlib.Path(__file__).resolve().parents[2] / "configs" / "youtube.yaml")
    world = config.synthetic
    assert world.slate_size > 1 and world.clickbait_fraction > 0 and world.freshness_days > 0
    assert world.num_channels > 0 and world.num_languages > 0 and config.ranking.train_on == "auto"
