"""trainer.data.table_csv: no row of a user or item table is dropped silently."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pandas as pd
import pytest

from trainer.data.schema import DataError
from trainer.data.table_csv import read_events, read_items, read_users

USERS = "user_id,gender,age,occupation,region\nu1,F,30,writer,9\nu2,M,41,doctor,1\nu3,,,,\n"
ITEMS = "item_id,title,genres,release_time\ni1,Heat,Action|Crime,100\ni2,Up,,\n"


@pytest.mark.parametrize("read, text, line", [
    (read_users, USERS.replace("\nu2", "\n\nu2"), 3),
    (read_users, USERS.replace("\nu3", "\n\r\nu3"), 4),
    (read_items, ITEMS.replace("\ni1", "\n\ni1"), 2),
    (read_users, USERS.replace("\nu2", "\n  \nu2"), 3),
    (read_items, ITEMS.replace("\ni2", "\n\t\ni2"), 3),
    (read_events, "user_id,item_id,timestamp\nu1,a,1\n \t \nu1,b,2\n", 3),
])
def test_a_blank_line_between_rows_is_an_error_naming_it(
    tmp_path: pathlib.Path, read: Callable[[pathlib.Path], pd.DataFrame], text: str, line: int
) -> None:
    path = tmp_path / "table.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=rf"table\.csv line {line}: a blank line"):
        read(path)


def test_blank_lines_at_the_end_are_counted_and_logged(tmp_path: pathlib.Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "users.csv"
    path.write_text(USERS + "\n\n", encoding="utf-8")
    with caplog.at_level("WARNING"):
        assert list(read_users(path)["user_id"]) == ["u1", "u2", "u3"]
    assert "users.csv: ignored 2 blank line(s) at the end of the file" in caplog.text


def test_a_table_without_blank_lines_logs_nothing(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "items.csv"
    path.write_text(ITEMS.rstrip("\n"), encoding="utf-8")  # no final newline either
    with caplog.at_level("WARNING"):
        assert list(read_items(path)["item_id"]) == ["i1", "i2"]
    assert not caplog.text
