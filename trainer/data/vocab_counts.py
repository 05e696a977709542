"""`Vocabularies.from_training` computed from counts, chunk by chunk of the training events.

Memory is one counter entry per distinct user id, item id and query token, never per event.
The ordering rule is the one of `trainer.data.vocab`: frequency descending, then value, no "".
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from trainer.data.vocab import Vocabularies, tokenize, value_counts


class VocabularyCounter:
    """Counts the categorical values of training events as they stream by."""

    def __init__(self) -> None:
        self.user_ids: Counter[str] = Counter()
        self.item_ids: Counter[str] = Counter()
        self.query_tokens: Counter[str] = Counter()

    def add(self, train_events: pd.DataFrame) -> None:
        """Counts one chunk of training events (contract columns)."""
        self.user_ids.update(value_counts(train_events["user_id"]))
        self.item_ids.update(value_counts(train_events["item_id"]))
        self.query_tokens.update(token for query in train_events["query"].dropna() for token in tokenize(query))

    def vocabularies(self, users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
        """The vocabularies of everything counted so far.

        Args:
            users: the user table (users seen in training count once each for gender, occupation, region).
            items: the item table (items seen in training count once each for genres and title tokens).
        """
        return Vocabularies.from_counts(self.user_ids, self.item_ids, self.query_tokens, users, items)
