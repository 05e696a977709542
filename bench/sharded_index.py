"""Sharded retrieval index: recommend() latency and retrieval recall@K against the number of shards S.

`python -m bench.sharded_index --out FILE.json [--quick]`

A realistic corpus (bench.corpus: M item embeddings in d=32 with the spectrum and norm spread of a trained
two-tower model's, default M=200k, --quick 20k) with a hashed-user query tower over 1,000 query embeddings
drawn from the same fitted model is split into S shards by `trainer.retrieval.sharding.split_corpus`
(crc32 of the item id); each shard is a `retrieval` SavedModel over its items with its own ScaNN
searcher tuned by `tune_scann` to recall@K >= 0.95 (S = 1: the unsharded index, the baseline). For
each S, `python -m serving.server` (with the deploy manifests' thread flags, bench.machine.serving_thread_flags)
serves the shards (and a trivial ranking model) and
`serving.client.RecommenderClient` (shards queried concurrently, top-K lists merged by score)
answers one user per call, as in production:
- latency: median and p90 of recommend(k=K) over the request users, after warmup;
- recall: |merged K candidates ∩ exact top-K| / K, the exact top-K computed with NumPy over the whole
  corpus. One machine serves all shards here (2 cores), so the figures show the cost of the merge and of
  more, smaller searches, not the gain of spreading shards over machines.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from typing import Any

import numpy as np

import trainer  # noqa: F401  (TensorFlow's environment, before TensorFlow loads)

# isort: split
import tensorflow as tf

from bench.cli import SectionResult, section_parser
from bench.corpus import describe, generate, generate_queries, load_params
from bench.machine import serving_thread_flags
from bench.synthetic_models import export_synthetic_models, make_catalog
from recsys_common import contract
from serving.client import RecommenderClient
from serving.testing import running_server
from trainer.export import layout
from trainer.export.server_configs import LOCAL_MODELS_CONFIG, write_server_configs
from trainer.retrieval.scann_tuning import exact_top_k
from trainer.retrieval.sharding import publish_scann_shards, shard_model_names, split_corpus

DIM = 32
USERS = 1000
K = 100
TARGET_RECALL = 0.95


@dataclasses.dataclass(frozen=True)
class Sizes:
    items: int
    shard_counts: tuple[int, ...]
    requests: int
    brute_force_below: int


SIZES = {False: Sizes(items=200_000, shard_counts=(1, 2, 4, 8), requests=200, brute_force_below=20_000),
         True: Sizes(items=20_000, shard_counts=(1, 2, 4), requests=40, brute_force_below=2_000)}


def main(argv: list[str] | None = None) -> None:
    args = section_parser(__doc__.splitlines()[0] if __doc__ else "").parse_args(argv)
    result = SectionResult("sharded_index", args.quick)
    result.payload.update(measure(SIZES[args.quick]))
    result.write(args.out)


def measure(sizes: Sizes) -> dict[str, Any]:
    """Exports, serves and queries the index at every shard count; returns the rows and the notes."""
    corpus = make_corpus(sizes.items, seed=0)
    tower = HashedUserTower(corpus["users"])
    request_users = np.array([f"user-{i}" for i in range(sizes.requests)], dtype=object)
    queries = tower.embed(request_users)
    exact = exact_top_k(queries, corpus["items"], K)
    rows = []
    with tempfile.TemporaryDirectory(prefix="sharded_index_") as folder:
        for shards in sizes.shard_counts:
            base = pathlib.Path(folder) / f"s{shards}"
            exported = export_shards(tower, corpus, shards, base, sizes.brute_force_below, queries)
            rows.append({"shards": shards, **exported, **serve_and_query(base, exported["models"], request_users,
                                                                          corpus["ids"], exact)})
    baseline = rows[0]
    for row in rows:
        row["latency_ratio_vs_1_shard"] = round(row["latency_median_ms"] / baseline["latency_median_ms"], 3)
        del row["models"]
    columns = ["shards", "items_per_shard", "latency_median_ms", "latency_p90_ms", "latency_ratio_vs_1_shard",
               "recall_at_k", "shard_tuned_recall_min", "searchers", "export_s"]
    return {
        "baseline": "S = 1: the unsharded index (same corpus, same tuning rule, same server and client)",
        "items": sizes.items, "k": K, "dim": DIM, "requests": sizes.requests,
        "tables": [{"title": f"recommend(k={K}) latency and retrieval recall@{K} against shards", "columns": columns,
                    "rows": rows}],
        "rows": rows,
        "notes": [
            (f"corpus: {sizes.items} items, {describe(load_params())}; each shard tuned to recall@{K} >= "
            f"{TARGET_RECALL} (exact search below {sizes.brute_force_below} items)"),
            ("all shards run in one local server process on this machine: the latency shows the merge and "
            "per-shard overheads, not the speed-up of shards on separate machines"),
        ],
    }


def make_corpus(items: int, seed: int) -> dict[str, np.ndarray]:
    """Item ids [M], realistic item embeddings [M, d] and query embeddings [USERS, d] (bench.corpus)."""
    params = load_params()
    return {"ids": np.array([f"item-{i}" for i in range(items)], dtype=object),
            "items": generate(params, items, seed), "users": generate_queries(params, USERS, seed)}


class HashedUserTower(tf.Module):
    """A query tower for the benchmark: the user's row of an embedding table [U, d], by hashed user id."""

    def __init__(self, table: np.ndarray) -> None:
        super().__init__()
        self.table = tf.Variable(table, trainable=False, name="user_embeddings")

    def __call__(self, features: dict[str, tf.Tensor]) -> tf.Tensor:
        """Args: features with user_id [B] string. Returns [B, d]."""
        return tf.gather(self.table, tf.strings.to_hash_bucket_fast(features["user_id"], self.table.shape[0]))

    def embed(self, user_ids: np.ndarray) -> np.ndarray:
        return self({"user_id": tf.constant(user_ids.astype(str))}).numpy()


def export_shards(tower: HashedUserTower, corpus: dict[str, np.ndarray], shards: int, base: pathlib.Path,
                  brute_force_below: int, queries: np.ndarray) -> dict[str, Any]:
    """Publishes `shards` ScaNN retrieval models over the corpus (one `retrieval` model when shards = 1)."""
    start = time.perf_counter()
    names = [contract.RETRIEVAL] if shards == 1 else shard_model_names(shards)
    parts = split_corpus(corpus["ids"], corpus["items"], shards)
    metadata = layout.signature_metadata(contract.RETRIEVAL_INPUTS, contract.RETRIEVAL_OUTPUTS)
    published = publish_scann_shards(base, names, tower, parts, queries, K, TARGET_RECALL, brute_force_below,
                                     lambda shard: metadata)
    tuned = [shard.tuning for shard, _ in published]
    searchers = sorted({"exact" if t.params.brute_force else f"tree {t.params.num_leaves}/"
                        f"{t.params.num_leaves_to_search} reorder {t.params.reorder}" for t in tuned})
    return {"models": names, "items_per_shard": int(np.mean([len(ids) for ids, _ in parts])),
            "shard_tuned_recall_min": round(min(t.recall for t in tuned), 4), "searchers": "; ".join(searchers),
            "export_s": round(time.perf_counter() - start, 1)}


def serve_and_query(base: pathlib.Path, models: list[str], users: np.ndarray, item_ids: np.ndarray,
                    exact: np.ndarray) -> dict[str, Any]:
    """Serves `base` with serving.server and times recommend() per user; recall of the merged candidates."""
    export_synthetic_models(base, make_catalog(10, dim=4), (contract.RANKING,), k=5)
    written = write_server_configs(base, [*models, contract.RANKING])
    with running_server(model_config_file=written[LOCAL_MODELS_CONFIG], wait_for=[*models, contract.RANKING],
                        timeout=300, **serving_thread_flags()) as server, \
            RecommenderClient(server.grpc_target, retrieval_model=models, timeout=30) as client:
        for user in users[:5]:
            client.recommend(user_id=str(user), k=K)
        times, recalls = [], []
        for row, user in enumerate(users):
            started = time.perf_counter()
            found = client.recommend(user_id=str(user), k=K)
            times.append(time.perf_counter() - started)
            truth = set(item_ids[exact[row]].tolist())
            recalls.append(len({rec.item_id for rec in found} & truth) / len(truth))
    return {"latency_median_ms": round(float(np.median(times)) * 1000, 2),
            "latency_p90_ms": round(float(np.percentile(times, 90)) * 1000, 2),
            "recall_at_k": round(float(np.mean(recalls)), 4)}


if __name__ == "__main__":
    main()
