"""The item catalogue as fixed-shape arrays: the candidate side of retrieval and ranking."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from trainer.data.schema import DataError
from trainer.data.vocab import tokenize


@dataclasses.dataclass
class ItemCatalog:
    """Item features aligned by row.

    Attributes:
        item_ids: [M] str.
        genres: [M, G] str, "" pads at the end.
        title_tokens: [M, T] str, the first T title tokens, "" pads at the end.
        release_time: [M] int64 unix seconds (0 = unknown).
        titles: [M] str ("" = unknown).
        channels: [M] str, the uploader ("" = unknown; all unknown when left out).
        languages: [M] str ("" = unknown; all unknown when left out).
    """

    item_ids: np.ndarray
    genres: np.ndarray
    title_tokens: np.ndarray
    release_time: np.ndarray
    titles: np.ndarray
    channels: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=object))
    languages: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=object))

    def __post_init__(self) -> None:
        for name in ("channels", "languages"):
            values = np.asarray(getattr(self, name), dtype=object)
            setattr(self, name, values if len(values) else np.full(len(self.item_ids), "", dtype=object))

    @classmethod
    def from_items(
        cls,
        items: pd.DataFrame,
        item_ids: Sequence[str] | None = None,
        max_genres: int = 4,
        max_title_tokens: int = 8,
    ) -> ItemCatalog:
        """Builds the catalogue of `item_ids` (default: every item of the table, in table order).

        Args:
            items: the item table of the data contract.
            item_ids: [M] the items to include, in this order; each must be in `items`.
            max_genres: G, genres kept per item (extra ones are cut).
            max_title_tokens: T, title tokens kept per item.

        Raises:
            DataError: an id of `item_ids` is not in the item table.
        """
        if max_genres <= 0 or max_title_tokens <= 0:
            raise DataError(f"max_genres and max_title_tokens must be > 0, got {max_genres}, {max_title_tokens}")
        table = items if item_ids is None else _select(items, item_ids)
        return cls(
            item_ids=table["item_id"].to_numpy(dtype=object),
            genres=pad_lists(table["genres"], max_genres),
            title_tokens=pad_lists([tokenize(title) for title in table["title"]], max_title_tokens),
            release_time=table["release_time"].to_numpy(dtype=np.int64),
            titles=table["title"].to_numpy(dtype=object),
            channels=_column(table, "channel"),
            languages=_column(table, "language"),
        )

    def __len__(self) -> int:
        return len(self.item_ids)

    def positions(self, item_ids: Sequence[str] | np.ndarray) -> np.ndarray:
        """Row of each id in the catalogue.

        Args:
            item_ids: str array of any shape.

        Returns:
            int64 array of the same shape.

        Raises:
            DataError: an id is not in the catalogue.
        """
        array = np.asarray(item_ids, dtype=object)
        index = pd.Index(self.item_ids).get_indexer(array.ravel())
        if (index < 0).any():
            unknown = list(dict.fromkeys(array.ravel()[index < 0]))[:5]
            raise DataError(f"item catalogue: unknown item id(s) {unknown}")
        return index.astype(np.int64).reshape(array.shape)


def _column(table: pd.DataFrame, name: str) -> np.ndarray:
    """The table's column `name`, or "" for every row when it has none."""
    return table[name].to_numpy(dtype=object) if name in table.columns else np.full(len(table), "", dtype=object)


def pad_lists(lists: Sequence[Sequence[str]] | pd.Series, width: int) -> np.ndarray:
    """[N, width] object array: the first `width` entries of each list, "" pads at the end."""
    out = np.full((len(lists), width), "", dtype=object)
    for row, values in enumerate(lists):
        kept = list(values)[:width]
        out[row, : len(kept)] = kept
    return out


def _select(items: pd.DataFrame, item_ids: Sequence[str]) -> pd.DataFrame:
    index = pd.Index(items["item_id"]).get_indexer(list(item_ids))
    if (index < 0).any():
        unknown = [i for i, k in zip(item_ids, index) if k < 0][:5]
        raise DataError(f"item catalogue: item id(s) {unknown} are not in the item table")
    return items.iloc[index].reset_index(drop=True)
