"""Negative sampling for pointwise training, fresh every epoch.

Each training row gets `num` items drawn uniformly from the training items, none of them an
item its user interacted with in training (He et al. 2017 sample the same way; a row may get
the same negative twice, as there). The user/item pairs to avoid are encoded once as sorted
int64 codes, so each epoch's draw is a few vectorised passes of rejection sampling.

Negatives are not mined from the retrieval candidates: without impression logs, the unwatched
top candidates of a context are largely items the user watches later, so training against them
would teach the ranker to demote what the user goes on to watch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from trainer.data.splits import positive_codes, sorted_contains


class NegativeSampler:
    """Draws negatives [R, num] for fixed training rows.

    Args:
        row_users: [R] the user of each training row.
        seen: user -> items the user interacted with (never drawn for that user).
        pool: [M] the items to draw from.

    Raises:
        ValueError: the pool is empty, or some user has interacted with every pool item.
    """

    def __init__(self, row_users: Sequence[str] | np.ndarray, seen: Mapping[str, frozenset[str]],
                 pool: Sequence[str] | np.ndarray) -> None:
        self.pool = np.asarray(pool, dtype=object)
        if not len(self.pool):
            raise ValueError("negative sampling: the item pool is empty")
        users = pd.Index(pd.unique(np.asarray(row_users, dtype=object)))
        self.row_codes = users.get_indexer(np.asarray(row_users, dtype=object)).astype(np.int64)
        self.blocked, counts = positive_codes([seen.get(user, ()) for user in users], self.pool)
        full = np.flatnonzero(counts >= len(self.pool))
        if len(full):
            raise ValueError(
                f"negative sampling: user {users[full[0]]!r} has interacted with all {len(self.pool)} items")

    def sample(self, num: int, rng: np.random.Generator) -> np.ndarray:
        """[R, num] object array of item ids, each outside its row's user's seen items."""
        size = len(self.pool)
        draws = rng.integers(0, size, (len(self.row_codes), num))
        bad = self._is_blocked(draws)
        while bad.any():
            draws[bad] = rng.integers(0, size, int(bad.sum()))
            bad = self._is_blocked(draws)
        return self.pool[draws]

    def _is_blocked(self, draws: np.ndarray) -> np.ndarray:
        return sorted_contains(self.blocked, self.row_codes[:, None] * len(self.pool) + draws)
