"""Evaluating a ranking model: sampled candidates (NCF protocol), full ranking, the comparison table.

Sampled: each held-out item is ranked among its sampled negatives; HR@10 and NDCG@10 as in
He et al. 2017, the mean per-user AUC, and the weighted per-user loss of Covington et al.
2016 (trainer.metrics). Full ranking: every pool item the user has not watched is scored,
and the top K are compared with what the user watched next (Recall@K, NDCG@K).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from recsys_common import contract
from trainer import metrics
from trainer.ranking.models import RankingModel
from trainer.ranking.protocol import FullRankingSet, SampledSet
from trainer.run import markdown_table

LOGGER = logging.getLogger("trainer")
SAMPLED_K = 10
PAIRS_PER_BATCH = 1 << 16


def score_inputs(model: RankingModel, inputs: dict[str, np.ndarray], pairs_per_batch: int = PAIRS_PER_BATCH
                 ) -> np.ndarray:
    """Logits [R, C] for inputs with candidate_ids [R, C], scored in batches of about `pairs_per_batch` pairs."""
    rows, width = inputs[contract.CANDIDATE_IDS].shape
    batch = max(1, pairs_per_batch // max(width, 1))
    keys = [key for key in model.feature_keys if key in inputs]
    out = np.empty((rows, width), dtype=np.float32)
    for start in range(0, rows, batch):
        chunk = {key: tf.constant(inputs[key][start:start + batch]) for key in keys}
        out[start:start + batch] = model.logits(chunk).numpy()
    return out


def evaluate_sampled(model: RankingModel, held_out: SampledSet, k: int = SAMPLED_K) -> dict[str, float]:
    """HR@k, NDCG@k, AUC and the weighted per-user loss of the held-out items (candidate column 0).

    An empty set gives no figures (and a warning), not zeros that would read as a model that ranks nothing.
    """
    if not len(held_out):
        LOGGER.warning("ranking evaluation: no held-out examples (an empty split); no sampled metrics reported")
        return {}
    logits = score_inputs(model, held_out.inputs)
    ranks = metrics.rank_of_target(logits[:, 0], logits[:, 1:])
    watch_time = held_out.watch_time if np.isfinite(held_out.watch_time).any() else np.ones(len(held_out))
    return {
        f"hr@{k}": metrics.hit_rate_at_k(ranks, k),
        f"ndcg@{k}": metrics.ndcg_at_k_single(ranks, k),
        "auc": metrics.auc(logits[:, 0], logits[:, 1:]),
        "weighted_per_user_loss": metrics.weighted_per_user_loss(logits[:, 0], logits[:, 1:], watch_time),
    }


def top_k_full(model: RankingModel, full: FullRankingSet, k: int) -> np.ndarray:
    """[U, k] item ids: each user's best-scored pool items, their excluded items left out."""
    pool_index = {item: i for i, item in enumerate(full.pool)}
    users = len(full)
    batch = max(1, PAIRS_PER_BATCH // max(len(full.pool), 1))
    ranked = np.empty((users, min(k, len(full.pool))), dtype=object)
    for start in range(0, users, batch):
        stop = min(start + batch, users)
        inputs = {name: values[start:stop] for name, values in full.contexts.items()}
        inputs[contract.CANDIDATE_IDS] = np.tile(full.pool, (stop - start, 1))
        logits = score_inputs(model, inputs)
        for row, excluded in enumerate(full.exclude[start:stop]):
            logits[row, [pool_index[item] for item in excluded if item in pool_index]] = -np.inf
        ranked[start:stop] = full.pool[metrics.top_k_indices(logits, ranked.shape[1])]
    return ranked


def evaluate_full(model: RankingModel, full: FullRankingSet, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k and NDCG@k for each k of `ks` over the whole pool (none, and a warning, without users)."""
    if not len(full):
        LOGGER.warning("ranking evaluation: no test users to rank the catalogue for; no full-ranking metrics")
        return {}
    ranked = top_k_full(model, full, max(ks))
    return ranking_metrics(ranked, full.relevant, ks)


def ranking_metrics(ranked: np.ndarray, relevant: Sequence[frozenset[str]], ks: Sequence[int]) -> dict[str, float]:
    """Recall@k and NDCG@k of ranked lists [U, >= max(ks)]."""
    out = {}
    for k in ks:
        out[f"recall@{k}"] = metrics.recall_at_k(ranked.tolist(), relevant, k)
        out[f"ndcg_full@{k}"] = metrics.ndcg_at_k(ranked.tolist(), relevant, k)
    return out


def comparison_markdown(rows: list[dict[str, Any]], title: str) -> str:
    """The comparison table as Markdown, one row per model."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    return f"# {title}\n\n" + markdown_table(rows, columns)

