"""Evaluation requests built from one period's examples (preprocessed shards: no event log in memory)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from recsys_common import contract
from trainer.data.examples import ITEM_ID
from trainer.data.tfrecord import Manifest
from trainer.retrieval.evaluate import EvalSet

EarlierItems = Callable[[Sequence[str]], dict[str, set[str]]]


def eval_set_from_examples(examples: dict[str, np.ndarray], catalog_item_ids: np.ndarray, request_time: int,
                           max_users: int, seed: int, earlier_items: EarlierItems | None = None) -> EvalSet:
    """The temporal protocol's requests built from one period's examples (no event log in memory).

    Each user's request is the context of their first example in the period (its history is every
    earlier event, as a request at the period start sees it). The seen items (excluded, and not
    counted as answers) are that context's watch history plus `earlier_items` of the user: with
    `items_per_user` over the earlier shards this is `build_eval_set`'s protocol, except that the
    seeded sample of `max_users` is drawn before users left without unseen answers are dropped.

    Args:
        examples: `event_examples` arrays of the period's N events, in time order.
        catalog_item_ids: [M] the ranked corpus.
        request_time: the period start (every request's time).
        max_users, seed: a seeded sample of at most this many of the period's users.
        earlier_items: user ids -> the item ids each saw before the period; None = only the last H.
    """
    item_index = pd.Index(catalog_item_ids)
    users = np.asarray(examples[contract.USER_ID], dtype=object)
    first_row = pd.Series(np.arange(len(users))).groupby(users).min()
    candidates = np.array(sorted(first_row.index), dtype=object)
    if len(candidates) > max_users:
        candidates = np.sort(np.random.default_rng(seed).choice(candidates, max_users, replace=False))
    earlier = earlier_items(candidates.tolist()) if earlier_items is not None else {}
    targets = pd.Series(item_index.get_indexer(np.asarray(examples[ITEM_ID], dtype=object))).groupby(users)
    seen: dict[str, np.ndarray] = {}
    relevant: dict[str, np.ndarray] = {}
    for user in candidates:
        history = np.concatenate([examples[contract.WATCH_HISTORY][first_row[user]], list(earlier.get(user, ()))])
        rows = item_index.get_indexer(history.astype(object))
        seen[user] = np.unique(rows[rows >= 0])
        relevant[user] = np.setdiff1d(targets.get_group(user).to_numpy(), seen[user])
    user_ids = [user for user in candidates if len(relevant[user])]
    return _eval_set(examples, first_row, user_ids, seen, relevant, request_time, len(item_index))


def items_per_user(manifest: Manifest, splits: Sequence[str], user_ids: Sequence[str]) -> dict[str, set[str]]:
    """The item ids of `user_ids`' examples in `splits`, in one streaming pass (memory ~ those users' items)."""
    wanted = np.asarray(list(user_ids), dtype=object).astype(str)
    found: dict[str, set[str]] = {}
    for split in splits:
        if not manifest.examples(split):
            continue
        for batch in manifest.read(split, 4096).as_numpy_iterator():
            users = batch[contract.USER_ID].astype(str)
            mask = np.isin(users, wanted)
            for user, item in zip(users[mask].tolist(), batch[ITEM_ID][mask].astype(str).tolist()):
                found.setdefault(user, set()).add(item)
    return found


def _eval_set(examples: dict[str, np.ndarray], first_row: pd.Series, user_ids: list[str],
              seen: dict[str, np.ndarray], relevant: dict[str, np.ndarray], request_time: int,
              num_items: int) -> EvalSet:
    rows = first_row[user_ids].to_numpy() if user_ids else np.zeros(0, np.int64)
    queries = {spec.name: np.asarray(examples[spec.name])[rows] for spec in contract.RETRIEVAL_INPUTS}
    queries[contract.REQUEST_TIME] = np.full(len(rows), request_time, dtype=np.int64)
    seen_users = [np.full(len(seen[user]), row, dtype=np.int64) for row, user in enumerate(user_ids)]
    seen_items = [seen[user].astype(np.int64) for user in user_ids]
    return EvalSet(queries, [relevant[user] for user in user_ids],
                   np.concatenate(seen_users or [np.zeros(0, np.int64)]),
                   np.concatenate(seen_items or [np.zeros(0, np.int64)]), num_items)
