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
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from recsys_common import contract
from trainer.config import ExportConfig
from trainer.data.bundle import TrainingData
from trainer.export import layout
from trainer.retrieval.export import (
    RetrievalServingModule,
    brute_force_module,
    export_metadata,
    measure,
    sample_requests,
    scann_module,
    warmup_requests,
)
from trainer.retrieval.model import QueryTower, embed_queries
from trainer.retrieval.scann_index import SCANN_NAMESPACE
from trainer.retrieval.scann_tuning import ScannTuning, tune_scann
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


@dataclasses.dataclass(frozen=True)
class ShardIndex:
    """One shard's tuned ScaNN retrieval model, before it is published.

    Attributes:
        index: the shard number i (0-based).
        name: its model name.
        item_ids: [M_i] the shard's items, in corpus order.
        embeddings: [M_i, d] their embeddings.
        k: min(K, M_i), the number of candidates it returns.
        tuning: the ScaNN searcher tuned on its items, and its measured recall.
        module: the servable model (query tower + that searcher).
    """

    index: int
    name: str
    item_ids: np.ndarray
    embeddings: np.ndarray
    k: int
    tuning: ScannTuning
    module: RetrievalServingModule


def publish_scann_shards(base_dir: pathlib.Path, names: Sequence[str], query_tower: QueryTower,
                         shards: Sequence[tuple[np.ndarray, np.ndarray]], queries: np.ndarray, max_k: int,
                         target_recall: float, brute_force_below: int, metadata: Callable[[ShardIndex], dict[str, Any]],
                         warmups: Sequence[dict[str, np.ndarray]] = (),
                         publish: layout.Publisher = layout.publish_version) -> list[tuple[ShardIndex, pathlib.Path]]:
    """Publishes one ScaNN retrieval model per shard, each searcher tuned on its shard's items, in shard order.

    Args:
        base_dir: the saved_models folder; shard i goes to <base_dir>/<names[i]>/<version>.
        names: the shards' model names, one per shard.
        query_tower: maps the contract's user inputs to query embeddings [B, d].
        shards: (item_ids [M_i], embeddings [M_i, d]) per shard, as `split_corpus` returns them.
        queries: [Q, d] query embeddings each shard's searcher is tuned on.
        max_k: K; a shard returns min(K, its size).
        target_recall: the recall@k each shard's searcher is tuned to reach against exact search.
        brute_force_below: shards smaller than this use exact search.
        metadata: the export metadata of a shard (called before it is published).
        warmups: warmup requests written into every shard's version (none when empty).
        publish: publishes one shard's version (`layout.VersionSet.stage` to publish it with the other models).

    Returns:
        (shard, published version folder) per shard.
    """
    published = []
    for index, (name, (ids, embeddings)) in enumerate(zip(names, shards, strict=True)):
        k = min(max_k, len(ids))
        tuning = tune_scann(embeddings, queries, k, target_recall, brute_force_below)
        shard = ShardIndex(index, name, ids, embeddings, k, tuning,
                           scann_module(query_tower, ids, embeddings, k, tuning))
        version = publish(pathlib.Path(base_dir) / shard.name,
                          layout.version_writer(shard.module, shard.name, metadata(shard), warmups, (SCANN_NAMESPACE,)))
        published.append((shard, version))
    return published


def export_sharded_retrieval(result: RetrievalResult, data: TrainingData, export: ExportConfig,
                             base_dir: pathlib.Path, num_shards: int | None = None,
                             publish: layout.Publisher = layout.publish_version) -> dict[str, pathlib.Path]:
    """Tunes and publishes one ScaNN retrieval model per shard under `base_dir`.

    Args:
        result: the trained model and its item embeddings [M, d] aligned with result.item_ids.
        data: the data it was trained on (sample requests for tuning and warmup, titles).
        export: K, the ScaNN recall target and brute-force threshold, warmup count.
        base_dir: the saved_models folder.
        num_shards: S (default export.num_shards).
        publish: publishes one shard's version (`layout.VersionSet.stage` to publish it with the other models).

    Returns:
        {retrieval_shard_<i>: version dir}.
    """
    num_shards = num_shards or export.num_shards
    requests = sample_requests(data)
    query_tower = result.model.query_tower

    def shard_metadata(shard: ShardIndex) -> dict[str, Any]:
        exact = brute_force_module(query_tower, shard.item_ids, shard.embeddings, shard.k)
        measured = measure({contract.RETRIEVAL: shard.module, contract.RETRIEVAL_BRUTEFORCE: exact}, requests, shard.k)
        shard_result = dataclasses.replace(result, item_ids=shard.item_ids, item_embeddings=shard.embeddings)
        return {**export_metadata(shard_result, data, export, shard.k, shard.tuning, measured), "model": shard.name,
                "shard": {"index": shard.index, "num_shards": num_shards, "assignment": ASSIGNMENT,
                          "corpus_items": len(result.item_ids)}}

    shards = split_corpus(result.item_ids, result.item_embeddings, num_shards)
    published = publish_scann_shards(base_dir, shard_model_names(num_shards), query_tower, shards,
                                     embed_queries(query_tower, requests), export.max_k,
                                     export.scann_target_recall, export.scann_brute_force_below, shard_metadata,
                                     warmup_requests(requests, export.warmup_requests), publish)
    return {shard.name: version for shard, version in published}
