"""Negative sampling for pointwise training, fresh every epoch.

Each training row gets `num` items drawn uniformly from the training items, none of them an
item its user interacted with in training (He et al. 2017 sample the same way; a row may get
the same negative twice, as there). The user/item pairs to avoid are encoded once as sorted
int64 codes, so each epoch's draw is a few vectorised passes of rejection sampling.

With `CandidatePools`, a share of each row's negatives comes instead from the candidate
generator's top unseen items for the row's user (`ranking.candidate_negatives`): without impression
logs these stand in for what the user was shown and passed over. Uniform negatives teach the ranker
to tell a watch from a random item, which the candidate generator already does; the ranker's job in
two-stage serving is to order the candidate generator's list, and only negatives from that list
teach it. Some of them are items the user watches later (after the training period), the price of
having no impressions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from trainer.data.splits import positive_codes, sorted_contains


@dataclasses.dataclass(frozen=True)
class CandidatePools:
    """Per user, the candidate generator's top unseen items.

    Attributes:
        users: [U] user ids.
        items: [U, K] object item ids, best first; "" pads a user with fewer than K unseen items.
    """

    users: np.ndarray
    items: np.ndarray

    def __post_init__(self) -> None:
        if self.items.ndim != 2 or len(self.items) != len(self.users):
            raise ValueError(f"CandidatePools: items must be [U, K] with U = {len(self.users)} users, "
                             f"got shape {self.items.shape}")


class NegativeSampler:
    """Draws negatives [R, num] for fixed training rows.

    Args:
        row_users: [R] the user of each training row.
        seen: user -> items the user interacted with (never drawn for that user).
        pool: [M] the items to draw from.

        candidates: per user, the candidate generator's top unseen items (for `sample`'s `from_candidates`).

    Raises:
        ValueError: the pool is empty, or some user has interacted with every pool item.
    """

    def __init__(self, row_users: Sequence[str] | np.ndarray, seen: Mapping[str, frozenset[str]],
                 pool: Sequence[str] | np.ndarray, candidates: CandidatePools | None = None) -> None:
        self.pool = np.asarray(pool, dtype=object)
        if not len(self.pool):
            raise ValueError("negative sampling: the item pool is empty")
        users = pd.Index(pd.unique(np.asarray(row_users, dtype=object)))
        self.row_codes = users.get_indexer(np.asarray(row_users, dtype=object)).astype(np.int64)
        self.row_candidates = None
        if candidates is not None:
            rows = pd.Index(np.asarray(candidates.users, dtype=object)).get_indexer(users)
            padded = np.concatenate([np.asarray(candidates.items, dtype=object),
                                     np.full((1, candidates.items.shape[1]), "", dtype=object)])
            self.row_candidates = padded[rows][self.row_codes]  # a user without a pool gets a row of pads
        self.blocked, counts = positive_codes([seen.get(user, ()) for user in users], self.pool)
        full = np.flatnonzero(counts >= len(self.pool))
        if len(full):
            raise ValueError(
                f"negative sampling: user {users[full[0]]!r} has interacted with all {len(self.pool)} items")

    def sample(self, num: int, rng: np.random.Generator, from_candidates: int = 0) -> np.ndarray:
        """[R, num] object array of item ids, each outside its row's user's seen items.

        The first `from_candidates` columns are drawn uniformly from the row's candidate pool (a pool
        pad falls back to a uniform draw); the rest uniformly from the item pool.
        """
        if not 0 <= from_candidates <= num:
            raise ValueError(f"from_candidates must be in [0, num={num}], got {from_candidates}")
        if from_candidates and self.row_candidates is None:
            raise ValueError("from_candidates needs the NegativeSampler to be built with candidate pools")
        size = len(self.pool)
        draws = rng.integers(0, size, (len(self.row_codes), num))
        bad = self._is_blocked(draws)
        while bad.any():
            draws[bad] = rng.integers(0, size, int(bad.sum()))
            bad = self._is_blocked(draws)
        negatives = self.pool[draws]
        if from_candidates and self.row_candidates is not None:
            picks = rng.integers(0, self.row_candidates.shape[1], (len(self.row_codes), from_candidates))
            chosen = np.take_along_axis(self.row_candidates, picks, axis=1)
            negatives[:, :from_candidates] = np.where(chosen == "", negatives[:, :from_candidates], chosen)
        return negatives

    def _is_blocked(self, draws: np.ndarray) -> np.ndarray:
        return sorted_contains(self.blocked, self.row_codes[:, None] * len(self.pool) + draws)
