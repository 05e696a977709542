"""The candidate generator inside the ranker: its score as a ranking feature, and its top-K for two-stage tests.

Covington et al. (2016) feed the candidate generator's score to the ranking network. The
ranking signature carries no score, so the ranker holds the (frozen) query tower and the item
embeddings of the trained retrieval model and computes the score itself, in-graph, from the
same request: query_tower(user inputs) . item_embedding(candidate). A candidate outside the
retrieval catalogue scores 0. The query tower sees no example age (0), as at serving.

The candidate generator was trained on the ranker's own training events, so scoring a training row
with it is in-sample (the row's positive was one of its training targets) while a serving request's
score is not. With `ranking.retrieval_score_folds` = F >= 2 the training rows are cross-fitted
instead (`cross_fit`): the rows are split into F folds, F generators with the selected retrieval
config and epochs each train on the other folds, and a row's score comes from the generator that
did not see it, fed to the scorer as the training-only input OUT_OF_FOLD_SCORE. Validation, test
and serving requests are scored by the full generator inside the graph, as before.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from recsys_common import contract
from trainer.context import ModelContext
from trainer.data.examples import query_examples
from trainer.data.vocab import NUM_RESERVED
from trainer.layers import string_lookup
from trainer.ranking.protocol import items_by_user
from trainer.ranking.rows import OUT_OF_FOLD_SCORE, CandidatePools

# (user inputs, k, seen [B, S] str with "" pads) -> the k best unseen items (ids [B, k], "" pads; scores [B, k])
Retriever = Callable[[dict[str, np.ndarray], int, np.ndarray], tuple[np.ndarray, np.ndarray]]
QUERY_INPUTS = tuple(spec.name for spec in contract.USER_INPUTS if spec.name != contract.REQUEST_TIME)


class RetrievalScorer(keras.layers.Layer):
    """[B, N] dot products of the query embedding and each candidate's retrieval embedding (not trained)."""

    def __init__(self, query_tower: keras.layers.Layer, item_ids: np.ndarray, item_embeddings: np.ndarray,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        item_embeddings = np.asarray(item_embeddings, dtype=np.float32)
        if item_embeddings.ndim != 2 or len(item_embeddings) != len(item_ids):
            raise ValueError(f"item_embeddings must be [M, d] with M = {len(item_ids)} item ids, "
                             f"got shape {item_embeddings.shape}")
        self.query_tower = query_tower
        self.rows = string_lookup([str(i) for i in item_ids])
        table = np.concatenate([np.zeros((NUM_RESERVED, item_embeddings.shape[1]), np.float32), item_embeddings])
        self.item_table = self.add_weight(name="item_embeddings", shape=table.shape, trainable=False,
                                          initializer=tf.constant_initializer(table))
        self.trainable = False

    def call(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """Args: the signature inputs (candidate_ids [B, N]), or training rows with OUT_OF_FOLD_SCORE [B, N].

        Returns: [B, N] float32.
        """
        if OUT_OF_FOLD_SCORE in inputs:
            return tf.cast(inputs[OUT_OF_FOLD_SCORE], tf.float32)
        queries = self.query_tower({name: inputs[name] for name in QUERY_INPUTS}, training=False)
        items = tf.gather(self.item_table, self.rows(inputs[contract.CANDIDATE_IDS]))
        return tf.einsum("bd,bnd->bn", tf.cast(queries, tf.float32), items)


def scorer_for(retrieval: Any) -> RetrievalScorer:
    """The score feature of a `trainer.retrieval.train.RetrievalResult` (model.query_tower, item ids, embeddings).

    The retrieval catalogue is its own: candidate ids outside it score 0.
    """
    return RetrievalScorer(retrieval.model.query_tower, retrieval.item_ids, retrieval.item_embeddings,
                           name="retrieval_score")


def retriever_for(retrieval: Any) -> Retriever:
    """`trainer.retrieval.inference.retrieve` bound to a trained retrieval result: what the exported
    `retrieval_bruteforce` returns when the request's watch history is `seen` (over-fetch, drop seen)."""
    from trainer.retrieval.inference import retrieve

    def top_k(features: dict[str, np.ndarray], k: int, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return retrieve(retrieval, {name: features[name] for name in QUERY_INPUTS}, k, seen)

    return top_k


def candidate_pools(retrieval: Any, events: pd.DataFrame, users: pd.DataFrame, request_time: int,
                    history_length: int, search_history_length: int, k: int, batch: int = 1024) -> CandidatePools:
    """Each user's top `k` unseen items from the candidate generator, as of `request_time`.

    Args:
        retrieval: a `trainer.retrieval.train.RetrievalResult`.
        events: the training events: the users' histories and the items never drawn (seen).
        users: the user table (user features of the requests).
        request_time: the requests' time (unix seconds), e.g. the end of the training period.
        history_length, search_history_length: H and S of the requests.
        k: the pool size (at most the catalogue size; clipped to it).
        batch: users per retrieval call.
    """
    top_k = retriever_for(retrieval)
    ids = np.array(sorted(events["user_id"].astype(str).unique()), dtype=object)
    seen = items_by_user(events)
    k = min(k, len(retrieval.item_ids))
    pools = []
    for start in range(0, len(ids), batch):
        part = ids[start:start + batch]
        contexts = query_examples(events, users, part, request_time, history_length, search_history_length)
        watched = [sorted(seen[user]) for user in part]
        width = max(len(items) for items in watched)
        padded = np.array([items + [""] * (width - len(items)) for items in watched], dtype=object)
        pools.append(top_k(contexts, k, padded)[0])
    return CandidatePools(users=ids, items=np.concatenate(pools) if pools else np.zeros((0, k), dtype=object))


@dataclasses.dataclass(frozen=True)
class OutOfFoldScores:
    """Cross-fitted candidate-generator scores for fixed training rows.

    Attributes:
        queries: [R, d] each row's query embedding from the generator that did not train on it.
        folds: [R] int, each row's fold.
        item_ids: [M] the catalogue (the rows of `items`).
        items: [F, M, d] each fold generator's item embeddings.
    """

    queries: np.ndarray
    folds: np.ndarray
    item_ids: np.ndarray
    items: np.ndarray

    @functools.cached_property
    def _catalogue(self) -> pd.Index:
        return pd.Index(np.asarray(self.item_ids, dtype=object).astype(str))

    def __call__(self, candidate_ids: np.ndarray, rows: np.ndarray | None = None, chunk: int = 65_536
                 ) -> np.ndarray:
        """[B, C] candidate ids of the rows numbered `rows` [B] (None: all R rows, in order) -> [B, C] float32
        scores; an id outside the catalogue scores 0."""
        rows = np.arange(len(self.folds)) if rows is None else np.asarray(rows)
        items = self._catalogue.get_indexer(np.asarray(candidate_ids, dtype=object).astype(str).ravel())
        items = items.reshape(np.shape(candidate_ids))
        out = np.zeros(items.shape, np.float32)
        for start in range(0, len(items), chunk):
            part, at = items[start:start + chunk], rows[start:start + chunk]
            vectors = self.items[self.folds[at, None], np.maximum(part, 0)]
            scores = np.einsum("rd,rcd->rc", self.queries[at], vectors)
            out[start:start + chunk] = np.where(part >= 0, scores, 0.0)
        return out


def cross_fit(retrieval: Any, data: Any, examples: dict[str, np.ndarray], folds: int, seed: int,
              log: logging.Logger) -> OutOfFoldScores:
    """Out-of-fold scores of the training rows `examples` from `folds` generators like `retrieval`.

    Args:
        retrieval: the selected `RetrievalResult` (its config and selected epoch count are reused).
        data: the run's `TrainingData` (vocabularies, catalogue, time range, history length).
        examples: the ranking training rows (`event_examples`, R rows).
        folds: F >= 2.
        seed: seeds the fold assignment and each generator's initialisation.
        log: where each generator's training reports.
    """
    from trainer.retrieval.inputs import InMemoryTrainingInput
    from trainer.retrieval.model import embed_items, embed_queries
    from trainer.retrieval.train import build_model, fit, selected_epochs

    if folds < 2:
        raise ValueError(f"cross_fit needs at least 2 folds, got {folds}")
    config = dataclasses.replace(retrieval.config, epochs=selected_epochs(retrieval))
    rows = len(examples[contract.USER_ID])
    fold_of = np.random.default_rng([seed, folds]).integers(0, folds, rows)
    queries = np.zeros((rows, retrieval.item_embeddings.shape[1]), np.float32)
    items = []
    for fold in range(folds):
        keras.utils.set_random_seed(seed + fold)
        model = build_model(config, retrieval.features, ModelContext.of_run(data))
        train = {name: values[fold_of != fold] for name, values in examples.items()}
        fit(model, config, InMemoryTrainingInput(train, data.t_max, data.t_span), None, seed, None, None, log,
            label=f"retrieval fold {fold + 1}/{folds}")
        held = fold_of == fold
        queries[held] = embed_queries(model.query_tower, {name: examples[name][held] for name in QUERY_INPUTS
                                                          if name in examples})
        items.append(embed_items(model.candidate_tower, retrieval.item_ids))
    return OutOfFoldScores(queries, fold_of, np.asarray(retrieval.item_ids, dtype=object), np.stack(items))
