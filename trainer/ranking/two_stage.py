"""Two-stage evaluation: retrieval's top candidates re-ranked by the ranking model, against retrieval alone.

For each test user (the full-ranking set of the temporal split), the retriever returns its
best `num_candidates` items that the user has not watched, as every exported retrieval model does
for the watch history it is sent (it over-fetches and drops seen items in the graph,
trainer.retrieval.inference), so the evaluation and the serving client see the same candidates.
Retrieval alone keeps their retrieval order; two-stage orders them by the ranking model. Both
lists are scored against what the user watched in the test period (Recall@K, NDCG@K), so the
difference is the ranker's contribution. `candidate_recall`
(recall of the whole candidate list) bounds what any re-ranking can reach.

The ranker is trained for expected watch time (the YouTube objective), not for the number of
watches, so when the data has watch times both lists are also scored by watch-time recall@K: the
share of the user's watch time in the test period held by the top K.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys_common import contract
from trainer.metrics import recall_at_k, weighted_recall_at_k
from trainer.ranking.evaluate import ranking_metrics, score_inputs
from trainer.ranking.models import RankingModel
from trainer.ranking.protocol import FullRankingSet
from trainer.ranking.retrieval_feature import Retriever

USERS_PER_BATCH = 512


def candidates_after_exclusion(retriever: Retriever, full: FullRankingSet, num_candidates: int) -> np.ndarray:
    """[U, num_candidates] the retriever's best items outside each user's watched items ("" pads short lists).

    The retriever is asked for `num_candidates` items with the watched items as `seen`, as the client
    asks the exported model; what it returns is checked again here, as the client does.
    """
    out = np.full((len(full), num_candidates), "", dtype=object)
    for start in range(0, len(full), USERS_PER_BATCH):
        stop = min(start + USERS_PER_BATCH, len(full))
        excluded = full.exclude[start:stop]
        seen = np.full((stop - start, max(len(e) for e in excluded)), "", dtype=object)
        for row, items in enumerate(excluded):
            seen[row, :len(items)] = sorted(items)
        features = {name: values[start:stop] for name, values in full.contexts.items()}
        item_ids, _ = retriever(features, min(num_candidates, len(full.pool)), seen)
        for row, (items, watched) in enumerate(zip(item_ids, excluded)):
            kept = [item for item in items if item and item not in watched][:num_candidates]
            out[start + row, :len(kept)] = kept
    return out


def rerank(model: RankingModel, full: FullRankingSet, candidates: np.ndarray) -> np.ndarray:
    """The candidates [U, C] ordered by the model's scores (padding last)."""
    inputs = dict(full.contexts)
    inputs[contract.CANDIDATE_IDS] = candidates
    logits = np.where(candidates == "", -np.inf, score_inputs(model, inputs))
    order = np.argsort(-logits, axis=1, kind="stable")
    return np.take_along_axis(candidates, order, axis=1)


def evaluate_two_stage(retriever: Retriever, model: RankingModel, full: FullRankingSet, num_candidates: int,
                       ks: Sequence[int]) -> dict[str, float]:
    """Retrieval alone and retrieval + re-ranking on the same users and candidates.

    Returns:
        two_stage_candidate_recall, and for each k <= num_candidates: retrieval_only_recall@k,
        retrieval_only_ndcg_full@k, two_stage_recall@k, two_stage_ndcg_full@k, and with watch times
        retrieval_only_watch_time_recall@k and two_stage_watch_time_recall@k.
    """
    ks = [k for k in ks if k <= num_candidates] or [num_candidates]
    candidates = candidates_after_exclusion(retriever, full, num_candidates)
    out = {"two_stage_candidate_recall": recall_at_k(candidates.tolist(), full.relevant, num_candidates)}
    for system, ranked in (("retrieval_only", candidates), ("two_stage", rerank(model, full, candidates))):
        out.update(list_metrics(system, ranked, full, ks))
    return out


def list_metrics(system: str, ranked: np.ndarray, full: FullRankingSet, ks: Sequence[int]) -> dict[str, float]:
    """<system>_recall@k, <system>_ndcg_full@k and, with watch times, <system>_watch_time_recall@k.

    Args:
        system: the name the figures carry.
        ranked: [U, >= max(ks)] item ids per user of `full`, best first ("" pads).
    """
    out = {f"{system}_{k}": v for k, v in ranking_metrics(ranked, full.relevant, ks).items()}
    if full.relevant_watch_time is not None:
        lists = ranked.tolist()
        out.update({f"{system}_watch_time_recall@{k}": weighted_recall_at_k(lists, full.relevant_watch_time, k)
                    for k in ks})
    return out
