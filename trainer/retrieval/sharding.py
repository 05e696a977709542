"""A retrieval index split into S shards, each its own TF Serving model (`retrieval_shard_<i>`).

When the item corpus outgrows one index (one machine's memory, or one searcher's latency),
`export.num_shards: S` splits it: item i goes to shard crc32(item_id) mod S, a rule that keeps
an item on the same shard across exports and needs no lookup table. Every shard is the
`retrieval` model over its items: the same query tower (the signature of the serving contract)
and its own ScaNN searcher, tuned on its own items to `export.scann_target_recall`. A shard
returns its top min(K, shard size); the client sends each request to every shard in parallel
and merges their lists by score (`serving.client`, `retrieval_model=[shard names]`). With exact
shards the merged top-K is the unsharded index's top-K, item for item and score for score.
"""

from __future__ import annotations

import dataclasses
import pathlib
import zlib

import numpy as np

from serving import contract
from trainer.config import ExportConfig
from trainer.data.bundle import TrainingData
from trainer.export import layout
from trainer.retrieval.export import (
    brute_force_module,
    export_metadata,
    measure,
    sample_requests,
    scann_module,
    version_writer,
    warmup_requests,
)
from trainer.retrieval.model import embed_queries
from trainer.retrieval.scann_index import SCANN_NAMESPACE
from trainer.retrieval.scann_tuning import tune_scann
from trainer.retrieval.train import RetrievalResult

ASSIGNMENT = "crc32(utf-8 item_id) mod num_shards"


class ShardingError(ValueError):
    """A corpus that cannot be split as asked; the message says why."""


def shard_of(item_ids: np.ndarray, num_shards: int) -> np.ndarray:
    """[M] int64: the shard of each item id (crc32 of its utf-8 bytes, mod num_shards)."""
    if num_shards < 1:
        raise ShardingError(f"num_shards must be >= 1, got {num_shards}")
    return np.array([zlib.crc32(str(item).encode("utf-8")) % num_shards for item in np.asarray(item_ids).ravel()],
                    dtype=np.int64)


def split_corpus(item_ids: np.ndarray, item_embeddings: np.ndarray,
                 num_shards: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (item_ids [M_s], embeddings [M_s, d]) of each shard, items in corpus order.

    Raises:
        ShardingError: the arrays are not aligned, or a shard would be empty.
    """
    if len(item_ids) != len(item_embeddings):
        raise ShardingError(f"item_ids ({len(item_ids)}) and item_embeddings ({len(item_embeddings)}) must be aligned")
    shards = shard_of(item_ids, num_shards)
    sizes = np.bincount(shards, minlength=num_shards)
    if (sizes == 0).any():
        raise ShardingError(f"{num_shards} shards of {len(item_ids)} items leave shard(s) "
                            f"{np.flatnonzero(sizes == 0).tolist()} empty; use fewer shards")
    return [(np.asarray(item_ids)[shards == s], np.asarray(item_embeddings)[shards == s]) for s in range(num_shards)]


def shard_model_names(num_shards: int) -> list[str]:
    return [contract.shard_model_name(shard) for shard in range(num_shards)]


def export_sharded_retrieval(result: RetrievalResult, data: TrainingData, export: ExportConfig,
                             base_dir: pathlib.Path, num_shards: int | None = None) -> dict[str, pathlib.Path]:
    """Tunes and publishes one ScaNN retrieval model per shard under `base_dir`.

    Args:
        result: the trained model and its item embeddings [M, d] aligned with result.item_ids.
        data: the data it was trained on (sample requests for tuning and warmup, titles).
        export: K, the ScaNN recall target and brute-force threshold, warmup count.
        base_dir: the saved_models folder.
        num_shards: S (default export.num_shards).

    Returns:
        {retrieval_shard_<i>: version dir}.
    """
    num_shards = num_shards or export.num_shards
    requests = sample_requests(data)
    queries = embed_queries(result.model.query_tower, requests)
    warmups = warmup_requests(requests, export.warmup_requests)
    published = {}
    for shard, (item_ids, embeddings) in enumerate(split_corpus(result.item_ids, result.item_embeddings,
                                                                num_shards)):
        name = contract.shard_model_name(shard)
        k = min(export.max_k, len(item_ids))
        tuning = tune_scann(embeddings, queries, k, export.scann_target_recall, export.scann_brute_force_below)
        module = scann_module(result.model.query_tower, item_ids, embeddings, k, tuning)
        exact = brute_force_module(result.model.query_tower, item_ids, embeddings, k)
        measured = measure({contract.RETRIEVAL: module, contract.RETRIEVAL_BRUTEFORCE: exact}, requests, k)
        shard_result = dataclasses.replace(result, item_ids=item_ids, item_embeddings=embeddings)
        metadata = {**export_metadata(shard_result, data, export, k, tuning, measured), "model": name,
                    "shard": {"index": shard, "num_shards": num_shards, "assignment": ASSIGNMENT,
                              "corpus_items": len(result.item_ids)}}
        published[name] = layout.publish_version(pathlib.Path(base_dir) / name,
                                                 version_writer(module, name, (SCANN_NAMESPACE,), metadata, warmups))
    return published

