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
from collections import Counter
from collections.abc import Mapping, Sequence

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
        queries = train_events["query"].dropna()
        return cls.from_counts(
            value_counts(train_events["user_id"]),
            value_counts(train_events["item_id"]),
            Counter(token for query in queries for token in tokenize(query)),
            users,
            items,
        )

    @classmethod
    def from_counts(cls, user_ids: Mapping[str, int], item_ids: Mapping[str, int], query_tokens: Mapping[str, int],
                    users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
        """The vocabularies of counted training values; the other features come from the tables.

        Args:
            user_ids, item_ids, query_tokens: value -> its number of training events (or query words).
            users: the user table (users counted in `user_ids` count once each for gender, occupation, region).
            items: the item table (items counted in `item_ids` count once each for genres and title tokens).
        """
        train_users = users[users["user_id"].isin(set(user_ids))]
        train_items = items[items["item_id"].isin(set(item_ids))]
        return cls(
            user_ids=ranked(user_ids),
            item_ids=ranked(item_ids),
            genders=ranked(Counter(train_users["gender"])),
            occupations=ranked(Counter(train_users["occupation"])),
            regions=ranked(Counter(train_users["region"])),
            genres=ranked(Counter(value for genres in train_items["genres"] for value in genres)),
            title_tokens=ranked(Counter(token for title in train_items["title"] for token in tokenize(title))),
            query_tokens=ranked(query_tokens),
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


def ranked(counts: Mapping[str, int]) -> tuple[str, ...]:
    """The values of `counts` by count (descending), then by value, without ""."""
    order = sorted(((value, count) for value, count in counts.items() if value != ""),
                   key=lambda pair: (-pair[1], pair[0]))
    return tuple(value for value, _ in order)


def value_counts(values: pd.Series) -> dict[str, int]:
    """value -> number of occurrences, for a column of str."""
    return {str(value): int(count) for value, count in values.value_counts().items()}
