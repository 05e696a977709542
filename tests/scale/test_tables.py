"""User and item tables as CSV: round trip and clear errors."""

from __future__ import annotations

import logging
import pathlib
import re
from collections.abc import Callable

import pandas as pd
import pytest

from trainer.data.bundle import TrainingData
from trainer.data.event_stream import CsvEventSource
from trainer.data.schema import DataError
from trainer.data.table_csv import read_items, read_users, with_missing_rows, write_items, write_users


def test_tables_round_trip(tiny_data: TrainingData, tmp_path: pathlib.Path) -> None:
    write_users(tiny_data.dataset.users, tmp_path / "users.csv")
    write_items(tiny_data.dataset.items, tmp_path / "items.csv")
    pd.testing.assert_frame_equal(read_users(tmp_path / "users.csv"), tiny_data.dataset.users.reset_index(drop=True))
    pd.testing.assert_frame_equal(read_items(tmp_path / "items.csv"), tiny_data.dataset.items.reset_index(drop=True))


def test_ids_keep_leading_zeros_and_unknowns_stay_unknown(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('item_id,title,genres,release_time\n007,"Dr. No, 1962",Action|Spy,\nNA,,,5\n')
    items = read_items(path)
    assert items["item_id"].tolist() == ["007", "NA"]
    assert items["genres"].tolist() == [["Action", "Spy"], []]
    assert items["release_time"].tolist() == [0, 5]


@pytest.mark.parametrize("text, message", [
    ("user_id,age\nu1,old\n", r"age must be an integer, row 0 has 'old'"),
    ("user_id,age\nu1,30,extra\n", r"more fields than the header"),
    ("user_id,age\nu1,30\nu1,31\n", r"repeats user_id 'u1'"),
    ("", r"the file is empty"),
])
def test_bad_user_tables_are_clear_errors(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = tmp_path / "users.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message):
        read_users(path)


@pytest.mark.parametrize("header, read", [
    ("user_id,gender", read_users),
    ("item_id,title", read_items),
    ("user_id,item_id,timestamp", lambda path: list(CsvEventSource(path, chunk_size=2).chunks())),
], ids=["users", "items", "events"])
def test_text_that_is_not_utf8_is_an_error_naming_the_file(
        tmp_path: pathlib.Path, header: str, read: Callable[[pathlib.Path], object]) -> None:
    path = tmp_path / "table.csv"
    path.write_bytes(header.encode() + b"\nu1,caf\xe9\n")
    with pytest.raises(DataError, match=re.escape(f"{path}: not utf-8 text (") + r".* at byte \d+\)"):
        read(path)


def test_missing_rows_are_added_with_unknown_features(tiny_data: TrainingData) -> None:
    users, items = with_missing_rows(tiny_data.dataset.users, tiny_data.dataset.items, ["new-user"], ["new-item"])
    assert len(users) == len(tiny_data.dataset.users) + 1 and len(items) == len(tiny_data.dataset.items) + 1
    assert users.iloc[-1].tolist() == ["new-user", "", 0, "", "", ""]
    assert items.iloc[-1]["genres"] == [] and items.iloc[-1]["release_time"] == 0


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 100])
def test_the_event_log_drops_the_blank_lines_that_end_it_and_refuses_one_between_rows(
        tmp_path: pathlib.Path, chunk_size: int, caplog: pytest.LogCaptureFixture) -> None:
    rows = "user_id,item_id,timestamp\nu1,a,10\nu2,b,11\nu1,c,12\n"
    path = tmp_path / "events.csv"
    path.write_text(rows + "\n \n,,\n")
    with caplog.at_level(logging.WARNING):
        chunks = list(CsvEventSource(path, chunk_size=chunk_size).chunks())
    events = pd.concat([chunk.events for chunk in chunks])
    assert events["item_id"].tolist() == ["a", "b", "c"]
    assert [chunk.first_row for chunk in chunks] == list(range(0, 3, chunk_size))
    assert f"{path}: ignored 3 empty row(s) at the end of the file" in caplog.text
    for blank_line in (2, 3, 4):
        lines = rows.splitlines(keepends=True)
        path.write_text("".join([*lines[:blank_line - 1], "\n", *lines[blank_line - 1:]]))
        with pytest.raises(DataError, match=re.escape(f"{path} line {blank_line}: an empty row")):
            list(CsvEventSource(path, chunk_size=chunk_size).chunks())
