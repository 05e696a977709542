"""Which inputs the two towers use: the configured features minus those the data lacks.

`retrieval.features` switches groups on (`demographics` = gender, age bucket and
occupation); a group whose columns the dataset does not have (`Dataset.available()`) is
left out, so the same config runs on MovieLens (no search queries) and on synthetic logs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable

from recsys_common import contract

# Training-only inputs of the towers (never part of a serving request).
EXAMPLE_AGE = "example_age"  # [B] float32 in [0, 1]; absent at serving = 0
CANDIDATE_PROBABILITY = "candidate_probability"  # [B] float32, the watched item's sampling probability (logQ)

# Config feature -> the optional data columns it needs (any one of them is enough).
_REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "search_history": ("query",),
    "demographics": ("gender", "age", "occupation"),
    "region": ("region",),
    "item_genres": ("genres",),
    "item_title": ("title",),
    "item_age": ("release_time",),
}

QUERY_INPUTS = (contract.USER_ID, contract.WATCH_HISTORY, contract.SEARCH_HISTORY, contract.GENDER, contract.AGE,
                contract.OCCUPATION, contract.REGION, EXAMPLE_AGE)


@dataclasses.dataclass(frozen=True)
class FeatureSet:
    """The inputs the towers are built with (the item id is always used)."""

    user_id: bool = True
    watch_history: bool = True
    search_history: bool = True
    gender: bool = True
    age: bool = True
    occupation: bool = True
    region: bool = True
    example_age: bool = True
    item_genres: bool = True
    item_title: bool = True
    item_age: bool = True

    @classmethod
    def resolve(cls, features: Iterable[str], available: Collection[str]) -> FeatureSet:
        """The configured feature groups that the data can feed.

        Args:
            features: names from `config.RETRIEVAL_FEATURES`.
            available: the optional columns the dataset has (`Dataset.available()`).

        Raises:
            ValueError: nothing is left for the query tower.
        """
        wanted = set(features)
        usable = {f for f in wanted if _has_columns(f, available)}
        demographics = "demographics" in usable
        resolved = cls(
            user_id="user_id" in usable,
            watch_history="watch_history" in usable,
            search_history="search_history" in usable,
            gender=demographics and "gender" in available,
            age=demographics and "age" in available,
            occupation=demographics and "occupation" in available,
            region="region" in usable,
            example_age="example_age" in usable,
            item_genres="item_genres" in usable,
            item_title="item_title" in usable,
            item_age="item_age" in usable,
        )
        if not resolved.query_inputs():
            raise ValueError(
                f"retrieval.features {sorted(wanted)} leave the query tower without inputs on this data "
                f"(available columns: {sorted(available)})"
            )
        return resolved

    def query_inputs(self) -> tuple[str, ...]:
        """The active query-tower inputs (example_age alone does not identify a user)."""
        return tuple(name for name in QUERY_INPUTS if getattr(self, name) and name != EXAMPLE_AGE)

    def enabled(self) -> list[str]:
        return [field.name for field in dataclasses.fields(self) if getattr(self, field.name)]


def dropped_features(features: Iterable[str], available: Collection[str]) -> list[str]:
    """The configured feature groups that the data cannot feed (for the log)."""
    return sorted(f for f in set(features) if not _has_columns(f, available))


def _has_columns(feature: str, available: Collection[str]) -> bool:
    needed = _REQUIRED_COLUMNS.get(feature)
    return needed is None or any(column in available for column in needed)
