"""Top-K ranking metrics in NumPy, shared by retrieval, ranking and the benchmarks.

Two protocols:
- sampled (NCF, He et al. 2017): each user has one held-out item scored against N sampled
  negatives; `rank_of_target` gives its 0-based rank, then `hit_rate_at_k` and
  `ndcg_at_k_single`. Ties count against the target (pessimistic), so a model that scores
  everything equally gets no credit.
- full corpus: each user has a set of relevant items and a top-K list; `recall_at_k` and
  `ndcg_at_k` average over users with at least one relevant item.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np

# Scores held at once by the blockwise top-K searches (128 MiB of float32; top_k_indices needs about 4x that at its
# peak): a block of queries against a large catalogue must not grow with the catalogue.
SCORE_BLOCK_FLOATS = 2**25


def rows_per_block(num_columns: int, most: int) -> int:
    """Rows of a [rows, num_columns] score block that fit SCORE_BLOCK_FLOATS: between 1 and `most`."""
    return max(1, min(most, SCORE_BLOCK_FLOATS // max(num_columns, 1)))


def top_k_indices(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k highest scores per row, best first.

    Args:
        scores: [U, M].
        k: 1 <= k <= M.

    Returns:
        [U, k] int64.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2 or not 0 < k <= scores.shape[1]:
        raise ValueError(f"top_k_indices: need scores [U, M] and 0 < k <= M, got shape {scores.shape} and k={k}")
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1).astype(np.int64)


def rank_of_target(target_scores: np.ndarray, negative_scores: np.ndarray) -> np.ndarray:
    """0-based rank of each user's held-out item among its negatives.

    Args:
        target_scores: [U] score of the held-out item.
        negative_scores: [U, N] scores of the sampled negatives.

    Returns:
        [U] int64, the number of negatives scored at least as high as the target.
    """
    target_scores = np.asarray(target_scores, dtype=np.float64)
    negative_scores = np.asarray(negative_scores, dtype=np.float64)
    if negative_scores.ndim != 2 or negative_scores.shape[0] != target_scores.shape[0]:
        raise ValueError(
            f"negative_scores must be [U, N] with U = {target_scores.shape[0]}, got shape {negative_scores.shape}"
        )
    return (negative_scores >= target_scores[:, None]).sum(axis=1).astype(np.int64)


def hit_rate_at_k(ranks: np.ndarray, k: int) -> float:
    """HR@k: the fraction of users whose held-out item ranks in the top k. Args: ranks [U] 0-based."""
    return float(np.mean(np.asarray(ranks) < k))


def ndcg_at_k_single(ranks: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item: mean of 1 / log2(rank + 2) over users with rank < k. Args: ranks [U]."""
    ranks = np.asarray(ranks, dtype=np.float64)
    gains = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    return float(np.mean(gains))


def weighted_recall_at_k(top_k: Sequence[Sequence[str]], weights: Sequence[Mapping[str, float]], k: int) -> float:
    """The share of each user's relevant weight (e.g. watch time) found in the top k, averaged over users.

    Args:
        top_k: [U, >=k] ranked item ids per user.
        weights: [U] relevant item id -> its weight (>= 0); users whose weights sum to 0 are left out.
    """
    values = [
        sum(weight.get(item, 0.0) for item in list(ranked)[:k]) / total
        for ranked, weight in zip(top_k, weights, strict=True)
        if (total := sum(weight.values())) > 0
    ]
    return float(np.mean(values)) if values else 0.0


def recall_at_k(top_k: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int) -> float:
    """Recall@k = |top-k ∩ relevant| / |relevant|, averaged over users with relevant items.

    Args:
        top_k: [U, >=k] ranked item ids per user.
        relevant: [U] sets of relevant item ids.
    """
    values = [
        len(set(list(ranked)[:k]) & set(rel)) / len(rel)
        for ranked, rel in zip(top_k, relevant, strict=True)
        if len(rel)
    ]
    return float(np.mean(values)) if values else 0.0


def ndcg_at_k(top_k: Sequence[Sequence[str]], relevant: Sequence[Collection[str]], k: int) -> float:
    """Binary-relevance NDCG@k averaged over users with relevant items (ideal DCG uses min(|relevant|, k))."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    values = []
    for ranked, rel in zip(top_k, relevant, strict=True):
        if not len(rel):
            continue
        rel_set = set(rel)
        gains = np.array([item in rel_set for item in list(ranked)[:k]], dtype=np.float64)
        ideal = discounts[: min(len(rel_set), k)].sum()
        values.append(float((gains * discounts[: len(gains)]).sum() / ideal))
    return float(np.mean(values)) if values else 0.0


def auc(positive_scores: np.ndarray, negative_scores: np.ndarray) -> float:
    """Mean per-user AUC of one positive against its negatives (ties count one half).

    Args:
        positive_scores: [U].
        negative_scores: [U, N].
    """
    positive = np.asarray(positive_scores, dtype=np.float64)[:, None]
    negative = np.asarray(negative_scores, dtype=np.float64)
    wins = (positive > negative).sum(axis=1) + 0.5 * (positive == negative).sum(axis=1)
    return float(np.mean(wins / negative.shape[1]))


def weighted_per_user_loss(
    positive_scores: np.ndarray, negative_scores: np.ndarray, positive_watch_time: np.ndarray
) -> float:
    """The weighted, per-user loss of Covington et al. 2016 (section 4.3), over held-out pairs.

    Each held-out positive is paired with the negatives shown to (here: sampled for) the same
    user. When a negative scores higher than its positive, the positive's watch time counts as
    mispredicted (a tie counts one half). The loss is the mispredicted watch time as a fraction
    of the watch time of all pairs: sum_p T_p * m_p / sum_p T_p, where m_p is the share of p's
    negatives that beat it. 0 is perfect; a model that scores everything alike gets 0.5.

    Args:
        positive_scores: [P].
        negative_scores: [P, N] (N >= 1).
        positive_watch_time: [P] >= 0 (NaN = unknown: the pair weighs one average watch).

    Raises:
        ValueError: shapes that do not line up, negative watch times, or no watch time at all.
    """
    positive = np.asarray(positive_scores, dtype=np.float64)
    negative = np.asarray(negative_scores, dtype=np.float64)
    watch_time = np.asarray(positive_watch_time, dtype=np.float64)
    if negative.ndim != 2 or negative.shape[0] != positive.shape[0] or watch_time.shape != positive.shape:
        raise ValueError(
            f"expected positive_scores [P], negative_scores [P, N], positive_watch_time [P]; got "
            f"{positive.shape}, {negative.shape}, {watch_time.shape}"
        )
    known = np.isfinite(watch_time)
    if (watch_time[known] < 0).any():
        raise ValueError("positive_watch_time must be >= 0")
    watch_time = np.where(known, watch_time, watch_time[known].mean() if known.any() else 1.0)
    if watch_time.sum() <= 0:
        raise ValueError("positive_watch_time sums to 0: the loss is undefined")
    beaten = (negative > positive[:, None]).mean(axis=1) + 0.5 * (negative == positive[:, None]).mean(axis=1)
    return float((watch_time * beaten).sum() / watch_time.sum())
