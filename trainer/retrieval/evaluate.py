"""Offline evaluation of candidate generation.

Two protocols:
- temporal (what serving faces): every user with events in a later period gets one request
  built from their earlier events; all catalogue items are ranked, the items already in the
  user's history are excluded (the client drops them too), and Recall@K / NDCG@K are taken
  against the later period's items that the user had not seen before.
- the TFRS tutorial protocol: a random 80/20 split of the events and
  `tfrs.metrics.FactorizedTopK` top-K categorical accuracy over all candidates (no
  exclusions), so figures compare with the TFRS tutorials.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_common import contract
from trainer import metrics
from trainer.data.examples import query_examples
from trainer.progress import track
from trainer.retrieval.model import RetrievalModel, embed_items, embed_queries

ScoreFn = Callable[[dict[str, np.ndarray]], np.ndarray]
LOGGER = logging.getLogger("trainer")
MAX_USERS_PER_BLOCK = 512


@dataclasses.dataclass
class EvalSet:
    """Requests and answers of the temporal protocol.

    Attributes:
        queries: the serving inputs of U users (`query_examples`), U rows.
        relevant: [U] catalogue rows of each user's unseen target items (never empty).
        seen_users, seen_items: [E] (user row, catalogue row) pairs excluded from the ranking.
        num_items: M, the size of the catalogue that the rows index (and that a scorer scores).
    """

    queries: dict[str, np.ndarray]
    relevant: list[np.ndarray]
    seen_users: np.ndarray
    seen_items: np.ndarray
    num_items: int

    def __len__(self) -> int:
        return len(self.relevant)


def build_eval_set(history_events: pd.DataFrame, target_events: pd.DataFrame, users: pd.DataFrame,
                   catalog_item_ids: np.ndarray, request_time: int, history_length: int,
                   search_history_length: int, max_users: int, seed: int) -> EvalSet:
    """The temporal protocol's requests: users with unseen items in `target_events`, at most `max_users`.

    Args:
        history_events: what is known at request time (e.g. the training split).
        target_events: the period to predict (e.g. the validation split).
        users: the user table.
        catalog_item_ids: [M] the ranked corpus; every event item must be in it.
        request_time: the request time of every query.
        history_length, search_history_length: H and S of the requests.
        max_users: a seeded random sample of this many users is kept when there are more.
        seed: the sample's seed.
    """
    item_index = pd.Index(catalog_item_ids)
    seen = _user_items(history_events, item_index)
    targets = _user_items(target_events, item_index)
    relevant = {user: items - seen.get(user, set()) for user, items in targets.items()}
    user_ids = np.array(sorted(user for user, items in relevant.items() if items), dtype=object)
    if len(user_ids) > max_users:
        user_ids = np.sort(np.random.default_rng(seed).choice(user_ids, max_users, replace=False))
    queries = query_examples(history_events, users, user_ids, request_time, history_length, search_history_length)
    pairs = [(row, item) for row, user in enumerate(user_ids) for item in seen.get(user, ())]
    seen_users = np.array([row for row, _ in pairs], dtype=np.int64)
    seen_items = np.array([item for _, item in pairs], dtype=np.int64)
    return EvalSet(queries, [np.array(sorted(relevant[u]), dtype=np.int64) for u in user_ids], seen_users, seen_items,
                   num_items=len(item_index))


def _user_items(events: pd.DataFrame, item_index: pd.Index) -> dict[str, set[int]]:
    rows = item_index.get_indexer(events["item_id"].to_numpy(dtype=object))
    if (rows < 0).any():
        unknown = events["item_id"].to_numpy(dtype=object)[rows < 0][:5].tolist()
        raise ValueError(f"evaluation: event item id(s) {unknown} are not in the item catalogue")
    grouped: dict[str, set[int]] = {}
    for user, row in zip(events["user_id"].to_numpy(dtype=object), rows.tolist()):
        grouped.setdefault(user, set()).add(row)
    return grouped


def top_k_excluding_seen(score_fn: ScoreFn, eval_set: EvalSet, k: int, batch_size: int | None = None) -> np.ndarray:
    """Catalogue rows [U, k] of the best-scored unseen items per user, best first.

    Args:
        score_fn: a batch of b query rows -> scores [b, M] over the catalogue (M = eval_set.num_items).
        eval_set: the requests and the excluded (user, item) pairs.
        k: list length (at most M).
        batch_size: users scored at once; by default as many as keep a block's [b, M] scores within
            `metrics.SCORE_BLOCK_FLOATS` (at most MAX_USERS_PER_BLOCK), so a catalogue of millions costs no
            more memory than a small one.
    """
    step = batch_size or metrics.rows_per_block(eval_set.num_items, most=MAX_USERS_PER_BLOCK)
    starts = range(0, len(eval_set), step)
    width = min(k, eval_set.num_items)
    result = [np.zeros((0, width), dtype=np.int64)]
    for start in track(starts, len(starts), "retrieval evaluation", unit="batch"):
        scores = _unseen_scores(score_fn, eval_set, start, step)
        result.append(metrics.top_k_indices(scores, width))
    return np.concatenate(result)


def _unseen_scores(score_fn: ScoreFn, eval_set: EvalSet, start: int, count: int) -> np.ndarray:
    """Scores [b, M] float32 of users [start, start + count), their seen items set to -inf."""
    batch = {name: values[start:start + count] for name, values in eval_set.queries.items()}
    expected = [len(batch[contract.USER_ID]), eval_set.num_items]
    scores = np.array(score_fn(batch), dtype=np.float32)
    if list(scores.shape) != expected:
        raise ValueError(f"retrieval evaluation: the scorer must return scores {expected} (users of the batch, "
                         f"catalogue items) for a batch of {expected[0]} users, got shape {list(scores.shape)}")
    in_batch = (eval_set.seen_users >= start) & (eval_set.seen_users < start + expected[0])
    scores[eval_set.seen_users[in_batch] - start, eval_set.seen_items[in_batch]] = -np.inf
    return scores


def ranking_metrics(top_rows: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int]) -> dict[str, float]:
    """recall@k and ndcg@k for each k. Args: top_rows [U, >=max(ks)]; relevant [U] row arrays."""
    ranked: Any = top_rows.tolist()  # catalogue rows stand in for item ids
    answers: Any = [rows.tolist() for rows in relevant]
    result = {}
    for k in sorted(set(ks)):
        result[f"recall@{k}"] = metrics.recall_at_k(ranked, answers, k)
        result[f"ndcg@{k}"] = metrics.ndcg_at_k(ranked, answers, k)
    return result


def evaluate_scores(score_fn: ScoreFn, eval_set: EvalSet, ks: Sequence[int]) -> dict[str, float]:
    """The temporal protocol's Recall@K / NDCG@K of a scorer; no figures (and a warning) without users.

    An empty period has no recall to measure: reporting 0.0 would read as a model that found nothing.
    """
    if not len(eval_set):
        LOGGER.warning("retrieval evaluation: no test users (no user has unseen items in the period); "
                       "no metrics reported")
        return {}
    return ranking_metrics(top_k_excluding_seen(score_fn, eval_set, max(ks)), eval_set.relevant, ks)


def evaluate_model(model: RetrievalModel, item_ids: np.ndarray, eval_set: EvalSet, ks: Sequence[int],
                   item_embeddings: np.ndarray | None = None) -> dict[str, float]:
    """The temporal protocol's metrics of a two-tower model over the catalogue `item_ids` [M].

    Args:
        item_embeddings: [M, d] when already computed (else embedded here).
    """
    if item_embeddings is None:
        item_embeddings = embed_items(model.candidate_tower, item_ids)
    return evaluate_scores(lambda batch: embed_queries(model.query_tower, batch) @ item_embeddings.T, eval_set, ks)


def popularity_scorer(train_events: pd.DataFrame, catalog_item_ids: np.ndarray) -> ScoreFn:
    """The most-watched-items baseline: every user gets the training counts [b, M]."""
    return popularity_from_counts(train_events["item_id"].value_counts().to_dict(), catalog_item_ids)


def popularity_from_counts(item_counts: Mapping[str, int], catalog_item_ids: np.ndarray) -> ScoreFn:
    """The most-watched-items baseline from training item counts (items absent count 0): [b, M] per batch."""
    popularity = pd.Series(item_counts, dtype=np.float32).reindex(catalog_item_ids, fill_value=0.0).to_numpy()
    return lambda batch: np.broadcast_to(popularity, (len(batch[contract.USER_ID]), popularity.size))


def factorized_top_k_accuracy(query_embeddings: np.ndarray, true_item_ids: np.ndarray, item_ids: np.ndarray,
                              item_embeddings: np.ndarray, ks: Sequence[int] = (1, 5, 10, 50, 100),
                              batch_size: int = 4096) -> dict[str, float]:
    """TFRS `FactorizedTopK` top-K categorical accuracy (the TFRS tutorials' metric).

    Args:
        query_embeddings: [N, d] one query per held-out event.
        true_item_ids: [N] str, the watched item of each event.
        item_ids: [M] str, the candidates.
        item_embeddings: [M, d] aligned with `item_ids`.
        ks: the cut-offs (each <= M).
    """
    ks = tuple(k for k in ks if k <= len(item_ids))
    index = tfrs.layers.factorized_top_k.BruteForce(k=max(ks))
    index.index(tf.constant(item_embeddings, tf.float32), tf.constant(np.asarray(item_ids).astype(str)))
    metric = tfrs.metrics.FactorizedTopK(candidates=index, ks=ks)
    positions = pd.Index(item_ids).get_indexer(np.asarray(true_item_ids, dtype=object))
    if (positions < 0).any():
        unknown = np.asarray(true_item_ids, dtype=object)[positions < 0][:5].tolist()
        raise ValueError(f"factorized_top_k_accuracy: held-out item id(s) {unknown} are not among the candidates")
    for start in range(0, len(positions), batch_size):
        rows = positions[start:start + batch_size]
        metric.update_state(
            tf.constant(query_embeddings[start:start + batch_size], tf.float32),
            tf.constant(item_embeddings[rows], tf.float32),
            true_candidate_ids=tf.constant(np.asarray(item_ids).astype(str)[rows]),
        )
    return {f"top_{k}_accuracy": float(value.numpy()) for k, value in zip(ks, metric.result())}
