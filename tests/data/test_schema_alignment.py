"""Validation keeps rows aligned when the input table has a non-default index (a filtered frame)."""

from __future__ import annotations

import pandas as pd

from trainer.data.schema import validate_events, validate_items, validate_users


def test_filtered_tables_keep_their_rows_together() -> None:
    events = pd.DataFrame({"user_id": ["a", "b", "c"], "item_id": ["x", "y", "z"], "timestamp": [1, 2, 3],
                           "rating": [1.0, 2.0, 3.0], "query": ["q", None, "r"]}).iloc[1:]
    checked = validate_events(events, "test")
    assert checked[["user_id", "timestamp", "rating"]].values.tolist() == [["b", 2, 2.0], ["c", 3, 3.0]]
    assert checked["query"].isna().tolist() == [True, False] and checked["query"].iloc[1] == "r"
    users = validate_users(pd.DataFrame({"user_id": ["a", "b"], "gender": ["F", "M"], "age": [1, 2]}).iloc[1:], "t")
    assert users[["user_id", "gender", "age"]].values.tolist() == [["b", "M", 2]]
    items = validate_items(pd.DataFrame({"item_id": ["x", "y"], "title": ["X", "Y"], "genres": [["A"], ["B"]]})
                           .iloc[1:], "t")
    assert items[["item_id", "title"]].values.tolist() == [["y", "Y"]] and items["genres"].tolist() == [["B"]]
