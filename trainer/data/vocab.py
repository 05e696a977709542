"""Vocabularies of the categorical features, built from the training split only.

Each vocabulary is sorted by frequency (descending), then by value, and never holds "".
Lookups follow `tf.keras.layers.StringLookup(vocabulary=v, mask_token="", num_oov_indices=1)`:
"" (padding / unknown) -> 0, a value outside the vocabulary -> 1 (the OOV bucket, never an
error: ids first seen after training still get served), the i-th vocabulary entry -> i + 2.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from trainer.data.schema import DataError

PAD_INDEX = 0
OOV_INDEX = 1
NUM_RESERVED = 2  # the padding index and the OOV bucket
_WORD = re.compile(r"[^\W_]+")


def tokenize(text: str | None) -> list[str]:
    """Lower-case alphanumeric words of a title or query ("Toy Story (1995)" -> ["toy", "story", "1995"]).

    A missing value (None, NaN) has no words.
    """
    if not isinstance(text, str):
        return []
    return _WORD.findall(text.lower())


@dataclasses.dataclass(frozen=True)
class Vocabularies:
    """The vocabularies of every categorical feature (tuples sorted by frequency, then value)."""

    user_ids: tuple[str, ...]
    item_ids: tuple[str, ...]
    genders: tuple[str, ...]
    occupations: tuple[str, ...]
    regions: tuple[str, ...]
    genres: tuple[str, ...]
    title_tokens: tuple[str, ...]
    query_tokens: tuple[str, ...]

    @classmethod
    def from_training(cls, train_events: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
        """Builds the vocabularies from the training events and the users and items they mention.

        Args:
            train_events: the training split (contract columns).
            users: the user table (only users of `train_events` are counted, once each).
            items: the item table (only items of `train_events` are counted, once each).
        """
        if train_events.empty:
            raise DataError("cannot build vocabularies: the training split is empty")
        train_users = users[users["user_id"].isin(set(train_events["user_id"]))]
        train_items = items[items["item_id"].isin(set(train_events["item_id"]))]
        queries = train_events["query"].dropna()
        return cls(
            user_ids=_by_frequency(train_events["user_id"]),
            item_ids=_by_frequency(train_events["item_id"]),
            genders=_by_frequency(train_users["gender"]),
            occupations=_by_frequency(train_users["occupation"]),
            regions=_by_frequency(train_users["region"]),
            genres=_by_frequency(value for genres in train_items["genres"] for value in genres),
            title_tokens=_by_frequency(token for title in train_items["title"] for token in tokenize(title)),
            query_tokens=_by_frequency(token for query in queries for token in tokenize(query)),
        )

    def field(self, name: str) -> tuple[str, ...]:
        """The vocabulary called `name` (a field name of this class)."""
        if name not in _FIELDS:
            raise DataError(f"unknown vocabulary {name!r}; choose one of {', '.join(_FIELDS)}")
        vocabulary: tuple[str, ...] = getattr(self, name)
        return vocabulary

    def size(self, name: str) -> int:
        """Number of embedding rows a StringLookup of vocabulary `name` needs (entries + padding + OOV)."""
        return len(self.field(name)) + NUM_RESERVED

    def lookup(self, field: str, values: Sequence[str] | np.ndarray) -> np.ndarray:
        """Indices of `values` in vocabulary `field`, like the models' StringLookup.

        Args:
            field: a vocabulary name, e.g. "item_ids".
            values: str array of any shape.

        Returns:
            int64 array of the same shape: 0 for "", 1 for a value outside the vocabulary, else index + 2.
        """
        array = np.asarray(values, dtype=object)
        index = pd.Index(self.field(field)).get_indexer(array.ravel())
        codes = np.where(index >= 0, index + NUM_RESERVED, OOV_INDEX)
        codes[array.ravel() == ""] = PAD_INDEX
        return codes.astype(np.int64).reshape(array.shape)

    def to_json(self) -> str:
        """The vocabularies as a JSON object of lists."""
        return json.dumps({name: list(getattr(self, name)) for name in _FIELDS})

    @classmethod
    def from_json(cls, text: str) -> Vocabularies:
        """Reads what `to_json` wrote; raises DataError if a vocabulary is missing or malformed."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as error:
            raise DataError(f"vocabularies: not valid JSON: {error}") from None
        if not isinstance(raw, dict):
            raise DataError("vocabularies: expected a JSON object of lists")
        missing = [name for name in _FIELDS if name not in raw]
        if missing:
            raise DataError(f"vocabularies: missing field(s) {missing}")
        for name in _FIELDS:
            if not isinstance(raw[name], list) or not all(isinstance(v, str) for v in raw[name]):
                raise DataError(f"vocabularies: field {name!r} must be a list of strings")
        return cls(**{name: tuple(raw[name]) for name in _FIELDS})


_FIELDS = tuple(field.name for field in dataclasses.fields(Vocabularies))


def _by_frequency(values: Iterable[str]) -> tuple[str, ...]:
    counts = pd.Series(list(values), dtype=object).value_counts()
    counts = counts[counts.index != ""]
    order = sorted(zip(counts.index, counts.to_numpy()), key=lambda pair: (-pair[1], pair[0]))
    return tuple(str(value) for value, _ in order)
