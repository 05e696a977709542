"""ScaNN searchers (TensorFlow ops, namespace `Scann`) and the TFRS layer that serves them.

A `ScannParams` fixes one searcher: exact (ScaNN's own brute force, for small corpora) or a
partitioning tree with anisotropic hashing (AH) scoring and exact re-scoring of the best
`reorder` candidates. `ScannLayer` is `tfrs.layers.factorized_top_k.ScaNN` built from such
params. ScaNN's tree training is randomised (two builds from the same data and params can
partition differently), so the layer can take the searcher that was tuned and measured, and
then the exported index is exactly that searcher.

Trained item embeddings share a large common mean direction, which both the tree and AH spend their
resolution on. A tree index therefore holds the centred items x_i - mu (mu, the item mean [d], is
kept with the layer) and adds q·mu back to every returned score: for one query that is a constant,
so the exact ranking is unchanged and the returned scores are still the exact q·x_i, while the
partitions and quantisation of the centred data are far sharper.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras
from scann.scann_ops.py import scann_ops

SCANN_NAMESPACE = "Scann"  # the op namespace of ScaNN's TensorFlow ops (a SavedModel must allow it)
# ScaNN's rule of thumb: anisotropic quantization threshold 0.2 for dot-product search.
AH_THRESHOLD = 0.2
DISTANCE = "dot_product"
# ScaNN trains the tree on a sample of this many points (its own default).
TREE_TRAINING_SAMPLE = 100_000


@dataclasses.dataclass(frozen=True)
class ScannParams:
    """One ScaNN configuration.

    Attributes:
        brute_force: exact scoring of every item (no tree, no hashing).
        num_leaves: tree partitions (about sqrt(n)).
        num_leaves_to_search: partitions searched per query.
        reorder: candidates re-scored exactly after AH scoring (> K).
        dimensions_per_block: AH block size (2 is ScaNN's recommended default).
    """

    brute_force: bool
    num_leaves: int = 0
    num_leaves_to_search: int = 0
    reorder: int = 0
    dimensions_per_block: int = 2

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def build_searcher(embeddings: Any, params: ScannParams, k: int, shared_name: str | None = None
                   ) -> scann_ops.ScannSearcher:
    """Builds a ScaNN searcher over `embeddings` [M, d] float32 returning `k` neighbours by default."""
    builder = scann_ops.builder(embeddings, k, DISTANCE)
    if params.brute_force:
        builder = builder.score_brute_force()
    else:
        builder = builder.tree(
            num_leaves=params.num_leaves,
            num_leaves_to_search=params.num_leaves_to_search,
            training_sample_size=min(int(np.shape(embeddings)[0]), TREE_TRAINING_SAMPLE),
        )
        builder = builder.score_ah(params.dimensions_per_block, anisotropic_quantization_threshold=AH_THRESHOLD)
        builder = builder.reorder(params.reorder)
    return builder.build(shared_name=shared_name)


def over_fetch_settings(params: ScannParams, built_k: int, k: Any) -> tuple[Any, Any]:
    """(leaves searched, candidates re-scored) of a tree searcher tuned for `built_k` neighbours when asked for `k`.

    Both scale by k / built_k, rounded up (leaves capped at the tree's; reorder None when the params re-score none),
    so a longer list keeps the recall the tuning measured. `k` may be an int, an int array (one setting per k) or
    an int32 scalar tensor; both settings come back in its kind.
    """
    scaled_leaves = (params.num_leaves_to_search * k + built_k - 1) // built_k
    minimum = tf.minimum if tf.is_tensor(k) else np.minimum
    reorder = (params.reorder * k + built_k - 1) // built_k if params.reorder > 0 else None
    return minimum(params.num_leaves, scaled_leaves), reorder


def every_search_fills(leaf_sizes: np.ndarray, params: ScannParams, built_k: int) -> bool:
    """Whether a tree searcher tuned for `built_k` returns all k neighbours for every k from built_k up to the
    catalogue size, whichever leaves a query's search picks (so no served row needs a search over every leaf).

    Asked for k, the searcher scores the points of the leaves `over_fetch_settings` gives and re-scores as many
    candidates as it gives (all scored points when it re-scores none); it returns k neighbours exactly when both
    reach k. The leaves holding the fewest points are the worst case.

    Args:
        leaf_sizes: [num_leaves] the number of points in each leaf.
        params: the tree's search setting.
        built_k: the k it was tuned for.

    Raises:
        ValueError: `leaf_sizes` does not hold one count per leaf of `params`.
    """
    if params.brute_force:
        return True
    leaf_sizes = np.asarray(leaf_sizes, dtype=np.int64).reshape(-1)
    if len(leaf_sizes) != params.num_leaves:
        raise ValueError(f"every_search_fills: got {len(leaf_sizes)} leaf sizes for a tree of {params.num_leaves} "
                         "leaves; pass one count per leaf (ScannLayer.leaf_sizes)")
    fewest = np.concatenate([[0], np.cumsum(np.sort(leaf_sizes))])
    widths = np.arange(built_k, int(fewest[-1]) + 1)
    leaves, reorder = over_fetch_settings(params, built_k, widths)
    return bool(np.all(fewest[leaves] >= widths) and (reorder is None or np.all(reorder >= widths)))


def item_centre(embeddings: Any) -> np.ndarray:
    """The mean item embedding [d] float32 of `embeddings` [M, d] (what a tree index subtracts)."""
    return np.asarray(embeddings, dtype=np.float64).mean(axis=0).astype(np.float32)


def centred(embeddings: Any, centre: np.ndarray | None) -> np.ndarray:
    """`embeddings` [M, d] minus `centre` [d] (unchanged when it is None), float32 and contiguous."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if centre is not None:
        embeddings = embeddings - np.asarray(centre, dtype=np.float32)
    return np.ascontiguousarray(embeddings)


class ScannLayer(tfrs.layers.factorized_top_k.ScaNN):
    """The TFRS ScaNN top-K layer with its searcher built from `ScannParams`.

    Call it with query embeddings [B, d] (or raw features when `query_model` is given) and an
    optional k (a tensor is fine); it returns (scores [B, k], identifiers [B, k]).

    Args:
        params: the searcher's configuration.
        k: the number of neighbours returned by default.
        query_model: optional model from raw features to query embeddings [B, d].
        searcher: a searcher already built with `params` over the candidates that `index` will
            receive, minus `centre`; `index` then serialises it instead of training a new tree.
        centre: optional item mean [d]: the searcher indexes candidates - centre and every returned score
            gets query·centre added back (a non-trainable variable of the layer), so scores stay exact q·x.
        name: the layer name.
    """

    def __init__(self, params: ScannParams, k: int, query_model: keras.Model | None = None,
                 searcher: scann_ops.ScannSearcher | None = None, centre: np.ndarray | None = None,
                 name: str | None = None) -> None:
        super().__init__(
            query_model=query_model,
            k=k,
            num_leaves=max(params.num_leaves, 1),
            num_leaves_to_search=max(params.num_leaves_to_search, 1),
            dimensions_per_block=params.dimensions_per_block,
            num_reordering_candidates=params.reorder or None,
            name=name,
        )
        self.params = params
        self._searcher = searcher
        self._build_searcher = self._searcher_for
        self._centre_values = None if centre is None else np.asarray(centre, dtype=np.float32).reshape(-1)
        self.centre = None if centre is None else tf.Variable(self._centre_values, trainable=False,
                                                               name="item_centre")

    def call(self, queries: Any, k: Any = None, all_leaves: bool = False) -> tuple[Any, Any]:
        """(scores [B, k], identifiers [B, k]) of query embeddings [B, d]; `k` may be a tensor above the built k.

        For a k above the built one (the over-fetch that makes room for dropping seen items) a tree searcher
        searches num_leaves_to_search * k / built k leaves and re-scores reorder * k / built k candidates (rounded
        up), so the longer list keeps the recall the tuning measured (ScaNN would otherwise cut the list at `reorder`
        or at the points of the leaves searched). `all_leaves` searches every leaf (the leaves searched may hold
        fewer than k points).
        """
        k = self._k if k is None else k
        if self._serialized_searcher is None:
            raise ValueError("ScannLayer: call `index` before searching")
        if self.query_model is not None:
            queries = self.query_model(queries)
        searcher = scann_ops.searcher_from_module(self._serialized_searcher)
        if self.params.brute_force:
            result = searcher.search_batched(queries, final_num_neighbors=k)
        else:
            leaves, reorder = over_fetch_settings(self.params, self._k, k)
            if all_leaves:
                leaves = self.params.num_leaves
            result = searcher.search_batched(queries, final_num_neighbors=k, pre_reorder_num_neighbors=reorder,
                                             leaves_to_search=leaves)
        scores = result.distances
        if self.centre is not None:
            scores = scores + tf.linalg.matvec(tf.cast(queries, tf.float32), self.centre)[:, None]
        if self._identifiers is None:
            return scores, result.indices
        return scores, tf.gather(self._identifiers, result.indices)

    def leaf_sizes(self) -> np.ndarray:
        """[num_leaves] the points in each leaf of the indexed tree (ScaNN may leave some empty)."""
        if self._serialized_searcher is None:
            raise ValueError("ScannLayer: call `index` before asking for its leaves")
        tokens = np.asarray(self._serialized_searcher.datapoint_to_token).reshape(-1)
        return np.bincount(tokens, minlength=self.params.num_leaves)

    def every_search_fills(self) -> bool:
        """Whether every search the layer is asked for (k from its built k up to the catalogue) returns k neighbours:
        `every_search_fills` over this tree's leaves (brute force always does, and has no leaves to read)."""
        return self.params.brute_force or every_search_fills(self.leaf_sizes(), self.params, self._k)

    def _searcher_for(self, candidates: Any) -> scann_ops.ScannSearcher:
        if self._searcher is not None:
            return self._searcher
        return build_searcher(centred(candidates, self._centre_values), self.params, self._k,
                              shared_name=f"{self.name}/{uuid.uuid4()}")

    def get_config(self) -> dict[str, Any]:
        return {"params": self.params.to_json(), "k": self._k}
