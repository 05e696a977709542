"""In-memory retrieval with a trained model (what `retrieval_bruteforce` serves, without a server), and the
in-graph drop of seen items that every exported retrieval model applies.

Every retrieval signature returns K items the user has not seen: it over-fetches K + H candidates
(H = the width of `watch_history`, capped at the catalogue size) and keeps, in order, the first K
that are not in the row's `watch_history`. A plain TF Serving caller so gets the same list as the
client. When fewer than K unseen items exist, the list ends in pads: id "" with score PAD_SCORE.
"""

from __future__ import annotations

from typing import Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from recsys_common import contract
from trainer.metrics import top_k_indices
from trainer.retrieval.model import embed_queries
from trainer.retrieval.train import RetrievalResult

PAD_SCORE = float(np.finfo(np.float32).min)  # the lowest finite float32: pads sort last and survive JSON
# Ids are compared by 64-bit FarmHash (exact string comparison of every pair costs ~10x more); two distinct
# ids collide with probability ~1e-19, and a collision only drops an unseen item.
_HASH_BUCKETS = (1 << 63) - 1


def fetch_width(k: int, history_width: Any, num_items: int) -> Any:
    """min(k + H, num_items): how many candidates to fetch so that k survive dropping the H = `history_width`
    seen items of a request; an int for an int H, an int32 scalar tensor for a tensor H."""
    if tf.is_tensor(history_width):
        return tf.minimum(k + history_width, num_items)
    return min(k + history_width, num_items)


def unseen_top_k(item_ids: tf.Tensor, scores: tf.Tensor, seen: tf.Tensor, k: int, complete: bool = False
                 ) -> tuple[tf.Tensor, tf.Tensor]:
    """The k best-scored candidates of each row that are not seen, not "" and of finite score.

    The candidates come best first from a top-K search, so this keeps the first k unseen ones in their order.

    Args:
        item_ids: [B, F] string (F may be below k: ScaNN trims a short result).
        scores: [B, F] float32 (ScaNN marks missing neighbours with NaN).
        seen: [B, H] string, the items to drop ("" pads).
        k: the list length.
        complete: the candidates are a full search's (F >= k, real ids, finite scores), so the pads and checks
            a short result needs are left out of the graph.

    Returns:
        (item_ids [B, k] string, scores [B, k] float32), best first (equal scores in input order); short rows end
        in "" / PAD_SCORE.
    """
    item_ids = tf.convert_to_tensor(item_ids, tf.string)
    scores = tf.cast(scores, tf.float32)
    if not complete:
        short = tf.maximum(k - tf.shape(item_ids)[1], 0)
        item_ids = tf.pad(item_ids, [[0, 0], [0, short]], constant_values="")
        scores = tf.pad(scores, [[0, 0], [0, short]], constant_values=PAD_SCORE)
    hashed_ids = tf.strings.to_hash_bucket_fast(item_ids, _HASH_BUCKETS)
    hashed_seen = tf.strings.to_hash_bucket_fast(tf.convert_to_tensor(seen, tf.string), _HASH_BUCKETS)
    dropped = tf.reduce_any(tf.equal(hashed_ids[:, :, None], hashed_seen[:, None, :]), axis=-1)
    if not complete:
        dropped |= tf.equal(item_ids, "") | tf.logical_not(tf.math.is_finite(scores))
    # top_k puts equal scores in input order, so a row whose kept scores tie keeps the search's order
    best, order = tf.math.top_k(tf.where(dropped, -np.inf, scores), k=k)
    kept = best > -np.inf
    return (tf.where(kept, tf.gather(item_ids, order, batch_dims=1), ""), tf.where(kept, best, PAD_SCORE))


def retrieve(result: RetrievalResult, features: dict[str, np.ndarray], k: int, seen: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k unseen items of each request, as `retrieval_bruteforce` serves them.

    Args:
        result: the trained model and its item embeddings.
        features: the serving inputs (contract names), B rows; `example_age` absent = 0 as at serving.
        k: list length (at most the catalogue size).
        seen: [B, S] str items never returned ("" pads); by default features' watch_history, as served.

    Returns:
        (item_ids [B, k] str object array, scores [B, k] float32), best first; "" / PAD_SCORE pad a row
        with fewer than k unseen items.
    """
    if not 0 < k <= len(result.item_ids):
        raise ValueError(f"k must be in [1, {len(result.item_ids)}] (the catalogue size), got {k}")
    queries = embed_queries(result.model.query_tower, features)
    batch = len(queries)
    if seen is None:
        seen = features.get(contract.WATCH_HISTORY, np.zeros((batch, 0), dtype=object))
    seen = np.asarray(seen, dtype=object).reshape(batch, -1).astype(str)
    scores = queries @ result.item_embeddings.T
    rows = top_k_indices(scores, fetch_width(k, seen.shape[1], len(result.item_ids)))
    ids, kept_scores = unseen_top_k(np.asarray(result.item_ids, dtype=object)[rows].astype(str),
                                    np.take_along_axis(scores, rows, axis=1).astype(np.float32), seen, k)
    return np.char.decode(ids.numpy().astype(bytes), "utf-8").astype(object), kept_scores.numpy()
