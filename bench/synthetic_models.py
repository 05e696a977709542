"""Contract-conforming retrieval and ranking SavedModels made from random embeddings (no training).

For tests and benchmarks of the serving path (export layout, server configs, model server,
client) at any catalogue size, independent of the trainer. The models follow the serving
contract exactly (`contract.RETRIEVAL_INPUTS` / `RANKING_SIGNATURE` in, the contract outputs out):

    user vector  u = U[hash(user_id) mod H] + mean(E[watched items])   ("" and unknown items ignored)
    retrieval    scores = u . E[item], top K                            -> item_ids [B, K], scores [B, K]
                 (`retrieval`: a ScaNN tree + AH index, ops namespace Scann; others: brute force)
    ranking      logit = scale * u . E[candidate] (-20 for "" / unknown)
                 scores = sigmoid(logit), expected_watch_time = exp(logit)

The tests (tests/export/test_synthetic_models.py) compute the same in NumPy.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from recsys_common import contract
from trainer.export import layout

if TYPE_CHECKING:
    from trainer.retrieval.scann_index import ScannParams

USER_BUCKETS = 1000
PAD_LOGIT = -20.0


@dataclasses.dataclass(frozen=True)
class SyntheticCatalog:
    """The random parameters of the synthetic models.

    Attributes:
        item_ids: [M] str.
        item_embeddings: [M, D] float32.
        user_embeddings: [USER_BUCKETS, D] float32, by hashed user id.
        titles: item id -> title.
    """

    item_ids: np.ndarray
    item_embeddings: np.ndarray
    user_embeddings: np.ndarray
    titles: dict[str, str]


def make_catalog(num_items: int, dim: int = 16, seed: int = 0) -> SyntheticCatalog:
    """A catalogue of `num_items` items "i0".."i{M-1}" with random unit-scale embeddings."""
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{index}" for index in range(num_items)], dtype=object)
    items = (rng.standard_normal((num_items, dim)) / np.sqrt(dim)).astype(np.float32)
    users = (rng.standard_normal((USER_BUCKETS, dim)) / np.sqrt(dim)).astype(np.float32)
    titles = {item: f"Item {index}" for index, item in enumerate(item_ids[: min(num_items, 10_000)])}
    return SyntheticCatalog(item_ids, items, users, titles)


class _UserTower(tf.Module):
    def __init__(self, catalog: SyntheticCatalog) -> None:
        super().__init__()
        self.items = tf.Variable(catalog.item_embeddings, trainable=False, name="item_embeddings")
        self.users = tf.Variable(catalog.user_embeddings, trainable=False, name="user_embeddings")
        self.item_ids = tf.Variable(catalog.item_ids.astype(bytes), trainable=False, name="item_ids")
        self.index = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(catalog.item_ids.astype(bytes), np.arange(len(catalog.item_ids))),
            default_value=-1,
        )

    def item_rows(self, ids: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Embeddings [.., D] of item ids, and a mask [..] of the known ones."""
        rows = self.index.lookup(ids)
        known = rows >= 0
        return tf.gather(self.items, tf.maximum(rows, 0)), tf.cast(known, tf.float32)

    def user_vector(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """[B, D] user vectors."""
        bucket = tf.strings.to_hash_bucket_fast(features[contract.USER_ID], USER_BUCKETS)
        watched, known = self.item_rows(features[contract.WATCH_HISTORY])
        total = tf.reduce_sum(watched * known[..., None], axis=1)
        mean = tf.math.divide_no_nan(total, tf.reduce_sum(known, axis=1, keepdims=True))
        return tf.gather(self.users, bucket) + mean


class _Retrieval(_UserTower):
    def __init__(self, catalog: SyntheticCatalog, k: int) -> None:
        super().__init__(catalog)
        self.k = min(k, len(catalog.item_ids))

    @tf.function(input_signature=[layout.tf_input_signature(contract.RETRIEVAL_INPUTS)])
    def serve(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores = tf.matmul(self.user_vector(features), self.items, transpose_b=True)
        top = tf.math.top_k(scores, k=self.k)
        return {contract.ITEM_IDS: tf.gather(self.item_ids, top.indices), contract.SCORES: top.values}


class _ScannRetrieval(_UserTower):
    def __init__(self, catalog: SyntheticCatalog, k: int) -> None:
        from trainer.retrieval.scann_index import ScannLayer

        super().__init__(catalog)
        self.k = min(k, len(catalog.item_ids))
        self.scann = ScannLayer(default_scann_params(len(catalog.item_ids), self.k), self.k)
        self.scann.index(tf.constant(catalog.item_embeddings), tf.constant(catalog.item_ids.astype(bytes)))

    @tf.function(input_signature=[layout.tf_input_signature(contract.RETRIEVAL_INPUTS)])
    def serve(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        scores, item_ids = self.scann(self.user_vector(features), k=self.k)
        return {contract.ITEM_IDS: item_ids, contract.SCORES: scores}


def default_scann_params(num_items: int, k: int) -> ScannParams:
    """A tree of about sqrt(M) leaves, 5% of them searched, the best 4k re-scored exactly."""
    from trainer.retrieval.scann_index import ScannParams

    if num_items < 20_000:
        return ScannParams(brute_force=True)
    leaves = int(np.sqrt(num_items))
    return ScannParams(brute_force=False, num_leaves=leaves, num_leaves_to_search=max(leaves // 20, 1), reorder=4 * k)


# The ranking signature of a model that reads none of the ranking-only inputs, as this one.
RANKING_SIGNATURE = contract.ranking_inputs()


class _Ranking(_UserTower):
    def __init__(self, catalog: SyntheticCatalog, scale: float) -> None:
        super().__init__(catalog)
        self.scale = tf.constant(scale, tf.float32)

    @tf.function(input_signature=[layout.tf_input_signature(RANKING_SIGNATURE)])
    def serve(self, features: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        candidates, known = self.item_rows(features[contract.CANDIDATE_IDS])
        dot = tf.einsum("bd,bnd->bn", self.user_vector(features), candidates)
        logits = known * self.scale * dot + (1.0 - known) * PAD_LOGIT
        return {contract.SCORES: tf.sigmoid(logits), contract.EXPECTED_WATCH_TIME: tf.exp(logits)}


def export_synthetic_models(
    base_dir: pathlib.Path,
    catalog: SyntheticCatalog,
    models: Sequence[str] = (contract.RETRIEVAL_BRUTEFORCE, contract.RANKING),
    k: int = 100,
    ranking_scale: float = 1.0,
) -> dict[str, pathlib.Path]:
    """Exports one new version of each model (metadata with titles, warmup requests) under `base_dir`.

    Args:
        base_dir: the saved_models folder.
        catalog: the parameters.
        models: model names: RANKING, RETRIEVAL (ScaNN), any other name a brute-force retrieval model.
        k: how many candidates retrieval returns.
        ranking_scale: multiplies the ranking logits (to tell versions apart).

    Returns:
        model name -> the published version folder.
    """
    published = {}
    for name in models:
        is_ranking = name == contract.RANKING
        module = _module(name, catalog, k, ranking_scale)
        inputs = RANKING_SIGNATURE if is_ranking else contract.RETRIEVAL_INPUTS
        outputs = contract.RANKING_OUTPUTS if is_ranking else contract.RETRIEVAL_OUTPUTS
        metadata = {**layout.signature_metadata(inputs, outputs), contract.METADATA_ITEM_TITLES: catalog.titles,
                    "source": "synthetic_models", "num_items": len(catalog.item_ids)}
        write = layout.version_writer(module, name, metadata, [_warmup_request(inputs, catalog)],
                                      _op_namespaces(module))
        published[name] = layout.publish_version(pathlib.Path(base_dir) / name, write)
    return published


def _op_namespaces(module: _UserTower) -> tuple[str, ...]:
    """The custom op namespaces `module`'s SavedModel needs: ScaNN's for the ScaNN model, none otherwise."""
    if not isinstance(module, _ScannRetrieval):
        return ()
    from trainer.retrieval.scann_index import SCANN_NAMESPACE  # already loaded by _ScannRetrieval

    return (SCANN_NAMESPACE,)


def _module(name: str, catalog: SyntheticCatalog, k: int, ranking_scale: float) -> _UserTower:
    if name == contract.RANKING:
        return _Ranking(catalog, ranking_scale)
    if name == contract.RETRIEVAL:
        return _ScannRetrieval(catalog, k)
    return _Retrieval(catalog, k)


def _warmup_request(inputs: Sequence[contract.TensorSpec], catalog: SyntheticCatalog) -> dict[str, np.ndarray]:
    request = {}
    for spec in inputs:
        if spec.rank == 2 and spec.dtype != "string":
            request[spec.name] = np.array([[spec.default, spec.default]], dtype=np.int64)
        elif spec.rank == 2:
            request[spec.name] = np.array([["", catalog.item_ids[0]]], dtype=object).astype(bytes)
        elif spec.dtype == "string":
            request[spec.name] = np.array([b"warmup"])
        else:
            request[spec.name] = np.array([spec.default], dtype=np.int64)
    return request
