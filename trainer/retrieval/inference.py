"""In-memory retrieval with a trained model: what `retrieval_bruteforce` serves, without a server."""

from __future__ import annotations

import numpy as np

from trainer.metrics import top_k_indices
from trainer.retrieval.model import embed_queries
from trainer.retrieval.train import RetrievalResult


def retrieve(result: RetrievalResult, features: dict[str, np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact top-k items of each request (no exclusion of seen items: the client drops those).

    Args:
        result: the trained model and its item embeddings.
        features: the serving inputs (contract names), B rows; `example_age` absent = 0 as at serving.
        k: list length (at most the catalogue size).

    Returns:
        (item_ids [B, k] str object array, scores [B, k] float32), best first.
    """
    if not 0 < k <= len(result.item_ids):
        raise ValueError(f"k must be in [1, {len(result.item_ids)}] (the catalogue size), got {k}")
    queries = embed_queries(result.model.query_tower, features)
    scores = queries @ result.item_embeddings.T
    rows = top_k_indices(scores, k)
    return np.asarray(result.item_ids, dtype=object)[rows], np.take_along_axis(scores, rows, axis=1).astype(np.float32)
