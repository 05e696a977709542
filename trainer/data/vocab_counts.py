"""`Vocabularies.from_training` computed from counts, chunk by chunk of the training events.

Memory is one counter entry per distinct user id, item id and query token, never per event.
The ordering rule is the one of `trainer.data.vocab`: frequency descending, then value, no "".
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from trainer.data.vocab import Vocabularies, tokenize


class VocabularyCounter:
    """Counts the categorical values of training events as they stream by."""

    def __init__(self) -> None:
        self.user_ids: Counter[str] = Counter()
        self.item_ids: Counter[str] = Counter()
        self.query_tokens: Counter[str] = Counter()

    def add(self, train_events: pd.DataFrame) -> None:
        """Counts one chunk of training events (contract columns)."""
        self.user_ids.update(_value_counts(train_events["user_id"]))
        self.item_ids.update(_value_counts(train_events["item_id"]))
        tokens = [token for query in train_events["query"].dropna() for token in tokenize(query)]
        self.query_tokens.update(_value_counts(pd.Series(tokens, dtype=object)))

    def vocabularies(self, users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
        """The vocabularies of everything counted so far.

        Args:
            users: the user table (users seen in training count once each for gender, occupation, region).
            items: the item table (items seen in training count once each for genres and title tokens).
        """
        train_users = users[users["user_id"].isin(set(self.user_ids))]
        train_items = items[items["item_id"].isin(set(self.item_ids))]
        return Vocabularies(
            user_ids=_ranked(self.user_ids),
            item_ids=_ranked(self.item_ids),
            genders=_ranked(Counter(train_users["gender"])),
            occupations=_ranked(Counter(train_users["occupation"])),
            regions=_ranked(Counter(train_users["region"])),
            genres=_ranked(Counter(value for genres in train_items["genres"] for value in genres)),
            title_tokens=_ranked(Counter(token for title in train_items["title"] for token in tokenize(title))),
            query_tokens=_ranked(self.query_tokens),
        )


def _value_counts(values: pd.Series) -> dict[str, int]:
    return {str(value): int(count) for value, count in values.value_counts().items()}


def _ranked(counts: Counter[str]) -> tuple[str, ...]:
    order = sorted(((value, count) for value, count in counts.items() if value != ""),
                   key=lambda pair: (-pair[1], pair[0]))
    return tuple(value for value, _ in order)
