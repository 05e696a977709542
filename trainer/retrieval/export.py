"""Exporting the candidate generator in the TF Serving layout: `retrieval` and `retrieval_bruteforce`.

Both take the raw user features of the serving contract (any history widths, "" pads,
request_time accepted but unused: example age is 0 at serving) and return the top K =
min(export.max_k, catalogue size) item ids and scores among the items NOT in `watch_history`
(over-fetched and dropped in the graph, trainer.retrieval.inference.unseen_top_k, so a plain TF
Serving caller gets the client's list; a row with fewer unseen items ends in "" pads); a client
that wants fewer takes a prefix.
- `retrieval`: query tower + `tfrs.layers.factorized_top_k.ScaNN` over every catalogue item,
  tuned at export to reach `export.scann_target_recall` recall@K against brute force at the
  best measured speed; saved with the `Scann` op namespace allowed.
- `retrieval_bruteforce`: query tower + exact scoring (`tfrs.layers.factorized_top_k.BruteForce`:
  MatMul + TopKV2), stock TensorFlow ops only, so the stock TF Serving image serves it.
The recall of `retrieval` against `retrieval_bruteforce` on real requests and the latency of
both (median, in process, batch of 1 and a larger batch) go into both versions' metadata.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_common import contract
from trainer.config import ExportConfig
from trainer.data.bundle import TrainingData
from trainer.export import layout
from trainer.retrieval.inference import fetch_width, unseen_top_k
from trainer.retrieval.model import QueryTower, embed_queries
from trainer.retrieval.scann_index import SCANN_NAMESPACE, ScannLayer
from trainer.retrieval.scann_tuning import ScannTuning, recall_against, tune_scann
from trainer.retrieval.train import RetrievalResult

MAX_SAMPLE_REQUESTS = 512
LATENCY_BATCH = 64
LATENCY_REPEATS = 20


class RetrievalServingModule(tf.Module):
    """The exported object: a query tower and a top-K index, with one serving function.

    `serve(features)` takes the contract's inputs (user_id [B], watch_history [B, H], ...) and
    returns {item_ids: [B, K] string, scores: [B, K] float32}: the best K items not in watch_history,
    best first. The index is asked for min(K + H, num_items) items so that K survive the drop; when a
    tree searched too few points for that (its nearest leaves hold the user's history), those rows are
    searched again over every leaf. That second search is only built into the graph when some search can
    come back short (`ScannLayer.every_search_fills`): otherwise it costs every request a branch for nothing.
    """

    def __init__(self, query_tower: QueryTower, index: tfrs.layers.factorized_top_k.TopK, k: int,
                 num_items: int) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.index = index
        self.k = k
        self.num_items = num_items
        self.searches_again = isinstance(index, ScannLayer) and not index.every_search_fills()
        self.serve = tf.function(self._serve, input_signature=[layout.tf_input_signature(contract.RETRIEVAL_INPUTS)])

    def _serve(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        seen = features[contract.WATCH_HISTORY]
        queries, width = self.query_tower(features), fetch_width(self.k, tf.shape(seen)[1], self.num_items)
        scores, item_ids = self.index(queries, k=width)
        item_ids, scores = unseen_top_k(item_ids, scores, seen, self.k, complete=not self.searches_again)
        if self.searches_again:
            short = tf.reduce_any(tf.equal(item_ids, ""), axis=1)

            def every_leaf_for_short_rows() -> tuple[tf.Tensor, tf.Tensor]:
                all_scores, all_ids = self.index(queries, k=width, all_leaves=True)
                full_ids, full_scores = unseen_top_k(all_ids, all_scores, seen, self.k)
                return (tf.where(short[:, None], full_ids, item_ids), tf.where(short[:, None], full_scores, scores))

            item_ids, scores = tf.cond(tf.reduce_any(short), every_leaf_for_short_rows, lambda: (item_ids, scores))
        return {contract.ITEM_IDS: item_ids, contract.SCORES: scores}


def brute_force_module(query_tower: QueryTower, item_ids: np.ndarray, item_embeddings: np.ndarray,
                       k: int) -> RetrievalServingModule:
    """Exact top-k with stock ops over item_embeddings [M, d] aligned with item_ids [M]."""
    index = tfrs.layers.factorized_top_k.BruteForce(k=k)
    index.index(tf.constant(item_embeddings, tf.float32), tf.constant(_strings(item_ids)))
    return RetrievalServingModule(query_tower, index, k, len(item_ids))


def scann_module(query_tower: QueryTower, item_ids: np.ndarray, item_embeddings: np.ndarray, k: int,
                 tuning: ScannTuning) -> RetrievalServingModule:
    """Approximate top-k with the tuned ScaNN searcher over item_embeddings [M, d] (the one tuning measured,
    over the items centred on tuning.centre when it is set; the layer adds query·centre back to the scores)."""
    index = ScannLayer(tuning.params, k, searcher=tuning.searcher, centre=tuning.centre)
    index.index(tf.constant(item_embeddings, tf.float32), tf.constant(_strings(item_ids)))
    return RetrievalServingModule(query_tower, index, k, len(item_ids))


def export_retrieval(result: RetrievalResult, data: TrainingData, export: ExportConfig,
                     base_dir: pathlib.Path, publish: layout.Publisher = layout.publish_version
                     ) -> dict[str, pathlib.Path]:
    """Tunes, measures and publishes both retrieval models as new versions under `base_dir`.

    Args:
        result: the trained model and its item embeddings [M, d] (aligned with result.item_ids).
        data: the data it was trained on (sample requests, dataset facts, item titles).
        export: K, the ScaNN recall target and brute-force threshold, the number of warmup requests.
        base_dir: the saved_models folder; versions go to <base_dir>/<model name>/<version>.
        publish: publishes one model's version (`layout.VersionSet.stage` to publish it with the other models).

    Returns:
        {contract.RETRIEVAL: version dir, contract.RETRIEVAL_BRUTEFORCE: version dir}.
    """
    if len(result.item_ids) != len(result.item_embeddings):
        raise ValueError(f"result.item_ids ({len(result.item_ids)}) and result.item_embeddings "
                         f"({len(result.item_embeddings)}) must be aligned")
    k = min(export.max_k, len(result.item_ids))
    requests = sample_requests(data)
    query_tower = result.model.query_tower
    tuning = tune_scann(result.item_embeddings, embed_queries(query_tower, requests), k,
                        export.scann_target_recall, export.scann_brute_force_below)
    modules = {
        contract.RETRIEVAL: scann_module(query_tower, result.item_ids, result.item_embeddings, k, tuning),
        contract.RETRIEVAL_BRUTEFORCE: brute_force_module(query_tower, result.item_ids, result.item_embeddings, k),
    }
    metadata = export_metadata(result, data, export, k, tuning, measure(modules, requests, k))
    warmups = warmup_requests(requests, export.warmup_requests)
    namespaces = {contract.RETRIEVAL: (SCANN_NAMESPACE,), contract.RETRIEVAL_BRUTEFORCE: ()}
    return {
        name: publish(pathlib.Path(base_dir) / name,
                      layout.version_writer(module, name, {**metadata, "model": name}, warmups, namespaces[name]))
        for name, module in modules.items()
    }


def sample_requests(data: TrainingData, limit: int = MAX_SAMPLE_REQUESTS, seed: int = 0) -> dict[str, np.ndarray]:
    """Up to `limit` real requests (contract inputs only), from the test period's contexts (else earlier ones)."""
    examples = next((e for e in (data.test_examples, data.validation_examples, data.train_examples)
                     if len(e["user_id"])), data.train_examples)
    size = len(examples["user_id"])
    rows = np.sort(np.random.default_rng(seed).choice(size, min(limit, size), replace=False))
    return {spec.name: np.asarray(examples[spec.name])[rows] for spec in contract.RETRIEVAL_INPUTS}


def warmup_requests(requests: dict[str, np.ndarray], count: int) -> list[dict[str, np.ndarray]]:
    """`count` one-row requests: real ones, the last an unknown user with empty histories (all defaults)."""
    real = [{name: values[i:i + 1] for name, values in requests.items()} for i in range(max(count - 1, 0))]
    return real + [default_request(1)] if count else real


def default_request(batch: int) -> dict[str, np.ndarray]:
    """A request of `batch` rows in which every input is its contract default (an unknown user, no history)."""
    request = {}
    for spec in contract.RETRIEVAL_INPUTS:
        dtype = object if spec.dtype == "string" else np.dtype(spec.dtype)
        shape = (batch,) if spec.rank == 1 else (batch, 0)
        request[spec.name] = np.full(shape, spec.default, dtype=dtype)
    return request


def measure(modules: dict[str, RetrievalServingModule], requests: dict[str, np.ndarray], k: int) -> dict[str, Any]:
    """Recall@k of `retrieval` against `retrieval_bruteforce` on `requests`, and each model's median latency."""
    ids = {name: module.serve(_tensors(requests))[contract.ITEM_IDS].numpy() for name, module in modules.items()}
    recall = recall_against(ids[contract.RETRIEVAL], ids[contract.RETRIEVAL_BRUTEFORCE])
    batch = min(LATENCY_BATCH, len(requests[contract.USER_ID]))
    latency = {name: {"batch_1_ms": _median_ms(module, _rows(requests, 1)),
                      f"batch_{batch}_ms": _median_ms(module, _rows(requests, batch))}
               for name, module in modules.items()}
    return {f"scann_recall_at_{k}_vs_brute_force": recall, "recall_requests": len(requests[contract.USER_ID]),
            "latency_ms": latency}


def _median_ms(module: RetrievalServingModule, request: dict[str, tf.Tensor]) -> float:
    module.serve(request)
    times = []
    for _ in range(LATENCY_REPEATS):
        start = time.perf_counter()
        module.serve(request)[contract.SCORES].numpy()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def export_metadata(result: RetrievalResult, data: TrainingData, export: ExportConfig, k: int, tuning: ScannTuning,
                    measured: dict[str, Any]) -> dict[str, Any]:
    """The JSON asset of both versions: signature, data, config, metrics, index and measurements, titles."""
    titles = {str(i): str(t) for i, t in zip(data.catalog.item_ids, data.catalog.titles) if t}
    known = set(_strings(result.item_ids).tolist())
    return {
        **layout.signature_metadata(contract.RETRIEVAL_INPUTS, contract.RETRIEVAL_OUTPUTS),
        "stage": "retrieval",
        "k": k,
        "data": {"source": data.dataset.name, "events": len(data.dataset.events), "users": len(data.dataset.users),
                 "items": len(result.item_ids), "available_features": sorted(data.available_features)},
        "trained_on": data.trained_on,  # what the model saw: events, time range, whether refitted (export.refit)
        "config": {"retrieval": dataclasses.asdict(result.config), "export": dataclasses.asdict(export)},
        "features": result.features.enabled(),
        "metrics": result.metrics,
        "index": {"num_items": len(result.item_ids), "embedding_dim": int(result.item_embeddings.shape[1]),
                  "scann": tuning.to_json()},
        **measured,
        contract.METADATA_ITEM_TITLES: {i: t for i, t in titles.items() if i in known},
    }


def _rows(requests: dict[str, np.ndarray], count: int) -> dict[str, tf.Tensor]:
    return _tensors({name: values[:count] for name, values in requests.items()})


def _tensors(requests: dict[str, np.ndarray]) -> dict[str, tf.Tensor]:
    return {spec.name: tf.constant(_strings(requests[spec.name]) if spec.dtype == "string"
                                   else np.asarray(requests[spec.name], dtype=spec.dtype))
            for spec in contract.RETRIEVAL_INPUTS}


def _strings(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=object).astype(str)
