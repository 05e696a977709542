"""The item catalogue: fixed-shape, padded item features."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from trainer.data.catalog import ItemCatalog
from trainer.data.schema import DataError, validate_items

ITEMS = validate_items(pd.DataFrame({
    "item_id": ["a", "b", "c"],
    "title": ["The Long Title Of Many Words", "Short", ""],
    "genres": [["Drama", "Comedy", "War"], [], ["Horror"]],
    "release_time": [100, 0, 300],
}), "items")


def test_from_items_pads_and_cuts() -> None:
    catalog = ItemCatalog.from_items(ITEMS, max_genres=2, max_title_tokens=4)
    assert list(catalog.item_ids) == ["a", "b", "c"]
    assert catalog.genres.tolist() == [["Drama", "Comedy"], ["", ""], ["Horror", ""]]
    assert catalog.title_tokens.tolist() == [["the", "long", "title", "of"], ["short", "", "", ""], [""] * 4]
    np.testing.assert_array_equal(catalog.release_time, [100, 0, 300])
    assert catalog.release_time.dtype == np.int64 and len(catalog) == 3


def test_selected_ids_keep_their_order() -> None:
    catalog = ItemCatalog.from_items(ITEMS, item_ids=["c", "a"])
    assert list(catalog.item_ids) == ["c", "a"] and list(catalog.titles) == ["", "The Long Title Of Many Words"]
    np.testing.assert_array_equal(catalog.positions(np.array([["a", "c"]], dtype=object)), [[1, 0]])


@pytest.mark.parametrize("call", [
    lambda: ItemCatalog.from_items(ITEMS, item_ids=["a", "nope"]),
    lambda: ItemCatalog.from_items(ITEMS).positions(["a", "nope"]),
])
def test_unknown_ids_are_named(call) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="nope"):
        call()
