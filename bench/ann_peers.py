"""ANN libraries on the same embeddings: recall@100 against queries per second.

`python -m bench.ann_peers --out FILE.json [--quick]`

Why ScaNN: the candidate generator serves top-100 by maximum inner product, so this measures, on one
set of item embeddings and queries, what a user could pick instead:
- brute force (NumPy matmul + argpartition): the exact baseline every recall and speed-up is against;
- ScaNN (tree + asymmetric hashing + exact reordering) at several num_leaves / leaves_to_search /
  reorder settings (a trade-off curve; reorder = 100 = k means no reordering beyond the top-k);
- Faiss IVF-Flat, IVF-PQ (4-bit fast scan, its best up to 64 x k refined exactly, as ScaNN reorders; both
  probe the same fractions of their lists as ScaNN searches of its leaves) and HNSW;
- Annoy (random-projection trees).
All indexes use the inner product (Faiss METRIC_INNER_PRODUCT, Annoy "dot", ScaNN "dot_product").

Data: a realistic corpus (bench.corpus): item and query embeddings of dimension 32 drawn from a generative
model whose spectrum and norm spread were fitted from a trained two-tower model (bench/corpus_params.json).
Each setting reports recall@100 against the exact top-100, batched QPS (all queries in one call, all
usable cores, median over repeats) and single-query latency (one query per call, one thread, p50/p99).

ScaNN is swept over the very grid the export's tuner searches (trainer.retrieval.scann_tuning.tree_candidates:
about sqrt(N) leaves, the same leaves-searched fractions and reorder sizes, the tree trained on the same
sample size), and the export's auto-tuned setting is measured by the same function as every other point
and listed as its own row, next to the sweep's point at the same parameters.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import annoy
import faiss
import numpy as np
from threadpoolctl import threadpool_limits

import trainer  # noqa: F401  (sets the TensorFlow environment before ScaNN imports TensorFlow)

# isort: split
from scann.scann_ops.py import scann_ops_pybind

from bench.cli import SectionResult, section_parser
from bench.corpus import describe, generate, generate_queries, load_params
from bench.machine import usable_cores
from trainer.config import ExportConfig
from trainer.metrics import top_k_indices
from trainer.retrieval.scann_index import TREE_TRAINING_SAMPLE, centred
from trainer.retrieval.scann_tuning import (
    SEARCH_FRACTIONS,
    exact_top_k,
    recall_against,
    tree_candidates,
    tune_scann,
)

K = 100
DIM = 32
BRUTE_FORCE = "brute-force (numpy)"
EXPORT_TUNED = "scann (export auto-tuned)"
LARGEST_GRAPH_INDEX = 2_000_000  # HNSW and Annoy builds above this take too long on a 2-core machine
RECALL_TARGETS = (0.9, 0.95, 0.99)
REPEAT_BUDGET_S = 2.0


@dataclasses.dataclass(frozen=True)
class Scale:
    """One corpus size and how much to measure on it."""

    num_items: int
    num_queries: int
    num_single: int
    repeats: int


DEFAULT_SIZES = (100_000, 1_000_000, 5_000_000)
QUICK_SIZES = (10_000,)


def scale_for(num_items: int, quick: bool) -> Scale:
    """Fewer queries where each costs more (a large corpus) or time is short (--quick)."""
    if quick:
        return Scale(num_items, 200, 30, 1)
    if num_items > 200_000:
        return Scale(num_items, 500, 100, 3)
    return Scale(num_items, 1000, 200, 3)


@dataclasses.dataclass
class Setting:
    """One index at one search setting: a point of the trade-off curve.

    Attributes:
        library: the index family, e.g. "scann" or "faiss-hnsw".
        params: build and search parameters, as reported.
        search_batch: queries [Q, D] float32 -> ids [Q, K] int64.
        search_one: query [D] float32 -> ids [K] int64.
    """

    library: str
    params: dict[str, Any]
    search_batch: Callable[[np.ndarray], np.ndarray]
    search_one: Callable[[np.ndarray], np.ndarray]


@dataclasses.dataclass
class Family:
    """An index built once and the settings it is searched with."""

    library: str
    build_s: float
    settings: list[Setting]


def make_embeddings(num_items: int, num_queries: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered item embeddings and queries near them.

    Returns:
        items [num_items, dim] float32 and queries [num_queries, dim] float32.
    """
    rng = np.random.default_rng(seed)
    num_clusters = max(10, int(np.sqrt(num_items) / 2))
    centres = rng.normal(size=(num_clusters, dim))
    weights = rng.dirichlet(np.full(num_clusters, 0.5))
    cluster_of_item = rng.choice(num_clusters, size=num_items, p=weights)
    items = (centres[cluster_of_item] + 0.5 * rng.normal(size=(num_items, dim))).astype(np.float32)
    near = rng.integers(num_items, size=num_queries)
    queries = (items[near] + 0.5 * rng.normal(size=(num_queries, dim))).astype(np.float32)
    return items, queries


def realistic_embeddings(num_items: int, num_queries: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Items [num_items, 32] and queries [num_queries, 32] float32 from the fitted corpus model (bench.corpus)."""
    params = load_params()
    return generate(params, num_items, seed), generate_queries(params, num_queries, seed)


def brute_force_family(items: np.ndarray) -> Family:
    """The exact baseline: one matmul per block of queries (exact_top_k's memory-bounded blocks), then argpartition."""

    def one(query: np.ndarray) -> np.ndarray:
        return top_k_indices((items @ query)[np.newaxis], K)[0]

    def batch(queries: np.ndarray) -> np.ndarray:
        return exact_top_k(queries, items, K)

    setting = Setting(BRUTE_FORCE, {}, batch, one)
    return Family(BRUTE_FORCE, 0.0, [setting])


def scann_searcher(items: np.ndarray, num_leaves: int, leaves_to_search: int, reorder: int,
                   training_sample_size: int) -> Any:
    """ScaNN tree + AH (2 dims per block, anisotropic threshold 0.2) + exact reorder; num_leaves 0 = brute force."""
    builder = scann_ops_pybind.builder(items, K, "dot_product")
    if num_leaves == 0:
        builder = builder.score_brute_force()
    else:
        builder = (
            builder.tree(num_leaves=num_leaves, num_leaves_to_search=leaves_to_search,
                         training_sample_size=training_sample_size)
            .score_ah(2, anisotropic_quantization_threshold=0.2)
            .reorder(reorder)
        )
    searcher = builder.set_n_training_threads(usable_cores()).build()
    searcher.set_num_threads(usable_cores())
    return searcher


def scann_setting(searcher: Any, label: str, params: dict[str, Any], leaves: int, reorder: int) -> Setting:
    """A search setting of a built ScaNN searcher (leaves / reorder -1: the searcher's own)."""
    return Setting(
        label,
        params,
        lambda queries: np.asarray(searcher.search_batched_parallel(queries, K, reorder, leaves)[0]),
        lambda query: np.asarray(searcher.search(query, K, reorder, leaves)[0]),
    )


def scann_family(items: np.ndarray, num_leaves: int, leaves_to_search: list[int], reorders: list[int]) -> Family:
    """One ScaNN tree searched at every (leaves_to_search, reorder): both are search-time settings."""
    start = time.perf_counter()
    searcher = scann_searcher(items, num_leaves, leaves_to_search[0], max(reorders),
                              min(len(items), TREE_TRAINING_SAMPLE))
    build_s = time.perf_counter() - start
    settings = [
        scann_setting(searcher, "scann", {"num_leaves": num_leaves, "leaves_to_search": lv, "reorder": r}, lv, r)
        for r in reorders
        for lv in leaves_to_search
    ]
    return Family("scann", build_s, settings)


def export_tuned(items: np.ndarray, queries: np.ndarray, exact: np.ndarray, scale: Scale,
                 points: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The setting the export picks (trainer.retrieval.scann_tuning), measured like every other point.

    The tuner sees other queries than the measurement (a disjoint draw from the same model). Returns the
    summary (with the sweep's point at the same parameters, for comparison) and the point itself.
    """
    export = ExportConfig()
    tuning_queries = generate_queries(load_params(), 2 * len(queries), seed=len(items) + 1)
    start = time.perf_counter()
    tuning = tune_scann(items, tuning_queries, K, export.scann_target_recall, export.scann_brute_force_below)
    tune_s = time.perf_counter() - start
    chosen = tuning.params
    num_leaves = 0 if chosen.brute_force else chosen.num_leaves
    # the tuner's searcher indexes the centred items (q·centre added back keeps the ranking), as the export does
    searcher = scann_searcher(centred(items, tuning.centre), num_leaves, chosen.num_leaves_to_search, chosen.reorder,
                              min(len(items), TREE_TRAINING_SAMPLE))
    params = {"num_leaves": num_leaves, "leaves_to_search": chosen.num_leaves_to_search, "reorder": chosen.reorder}
    setting = scann_setting(searcher, EXPORT_TUNED, params, chosen.num_leaves_to_search or -1, chosen.reorder or -1)
    point = measure(setting, queries, exact, scale)
    point.pop("_found")
    same = next((p for p in points if p["library"] == "scann" and p["params"] == params), None)
    summary = {
        "label": f"export auto-tuned (target recall {export.scann_target_recall})",
        "target_recall": export.scann_target_recall,
        "params": params,
        "tune_s": round(tune_s, 2),
        "tuning_recall": tuning.recall,
        "centred": tuning.centre is not None,
        **{key: point[key] for key in ("recall", "batch_qps", "latency_ms_p50", "latency_ms_p99")},
        "sweep_same_params": None if same is None else {
            key: same[key] for key in ("recall", "batch_qps", "latency_ms_p50", "latency_ms_p99")},
    }
    return summary, point


def faiss_family(
    items: np.ndarray, library: str, factory: str, searches: list[tuple[dict[str, Any], Any]]
) -> Family:
    """A Faiss index from its factory string, searched with per-call SearchParameters.

    Args:
        items: [N, D] float32.
        searches: (reported params, faiss.SearchParameters) per setting.
    """
    start = time.perf_counter()
    index = faiss.index_factory(items.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:
        rng = np.random.default_rng(0)
        index.train(items[rng.choice(len(items), size=min(len(items), 200_000), replace=False)])
    index.add(items)
    build_s = time.perf_counter() - start

    def setting(params: dict[str, Any], search_params: Any) -> Setting:
        return Setting(
            library,
            {"index": factory, **params},
            lambda queries: index.search(queries, K, params=search_params)[1],
            lambda query: index.search(query[None, :], K, params=search_params)[1][0],
        )

    return Family(library, build_s, [setting(p, s) for p, s in searches])


def ivf_params(nprobe: int) -> Any:
    params: Any = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    return params


def ivf_probes(nlist: int) -> list[int]:
    """Lists probed per query: the fractions of nlist that the tuner searches of ScaNN's leaves (SEARCH_FRACTIONS),
    so that neither family's curve is cut short of the other's recall."""
    return sorted({max(1, round(nlist * fraction)) for fraction in SEARCH_FRACTIONS})


def ivf_searches(nprobes: list[int]) -> list[tuple[dict[str, Any], Any]]:
    return [({"nprobe": n}, ivf_params(n)) for n in nprobes]


def refined_ivf_searches(nprobes: list[int], k_factors: list[float]) -> list[tuple[dict[str, Any], Any]]:
    """IVF searches whose candidates (k_factor * k of them) are re-scored exactly by the refine index."""
    searches = []
    for factor in k_factors:
        for nprobe in nprobes:
            params: Any = faiss.IndexRefineSearchParameters()
            params.k_factor = factor
            params.base_index_params = ivf_params(nprobe)
            searches.append(({"nprobe": nprobe, "k_factor": factor}, params))
    return searches


def hnsw_searches(efs: list[int]) -> list[tuple[dict[str, Any], Any]]:
    untyped: Any = faiss  # faiss's type stubs lack SearchParametersHNSW
    searches = []
    for ef in efs:
        params: Any = untyped.SearchParametersHNSW()
        params.efSearch = ef
        searches.append(({"ef_search": ef}, params))
    return searches


def annoy_family(items: np.ndarray, num_trees: int, search_k_factors: list[int]) -> Family:
    """Annoy with the "dot" metric; batches are split over threads (Annoy searches one vector per call)."""
    start = time.perf_counter()
    index = annoy.AnnoyIndex(items.shape[1], "dot")
    for i, vector in enumerate(items):
        index.add_item(i, vector)
    index.build(num_trees, n_jobs=usable_cores())
    build_s = time.perf_counter() - start

    def setting(factor: int) -> Setting:
        search_k = factor * K * num_trees

        def one(query: np.ndarray) -> np.ndarray:
            return np.asarray(index.get_nns_by_vector(query, K, search_k=search_k))

        def batch(queries: np.ndarray) -> np.ndarray:
            with ThreadPoolExecutor(usable_cores()) as pool:
                return np.stack(list(pool.map(one, queries)))

        return Setting("annoy", {"num_trees": num_trees, "search_k": search_k}, batch, one)

    return Family("annoy", build_s, [setting(f) for f in search_k_factors])


@contextlib.contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Caps BLAS and OpenMP (Faiss) threads for the block."""
    faiss.omp_set_num_threads(threads)
    try:
        with threadpool_limits(threads):
            yield
    finally:
        faiss.omp_set_num_threads(usable_cores())


def measure(setting: Setting, queries: np.ndarray, exact: np.ndarray | None, scale: Scale) -> dict[str, Any]:
    """Recall, batched QPS (median over repeats) and single-query latency (p50, p99) of one setting.

    Args:
        queries: [Q, D]; exact: [Q, K] the exact top-K (None: this setting is the exact baseline).
    """
    with thread_limit(usable_cores()):
        found = setting.search_batch(queries)
        batch_s = _repeat_seconds(setting.search_batch, queries, scale.repeats)
    singles = queries[: scale.num_single]
    with thread_limit(1):
        for query in singles[:10]:
            setting.search_one(query)
        latencies = np.array([_seconds(setting.search_one, query) for query in singles])
    return {
        "library": setting.library,
        "params": setting.params,
        "recall": 1.0 if exact is None else recall_against(found, exact),
        "batch_qps": len(queries) / float(np.median(batch_s)),
        "latency_ms_p50": 1000 * float(np.median(latencies)),
        "latency_ms_p99": 1000 * float(np.percentile(latencies, 99)),
        "_found": found,
    }


def _repeat_seconds(fn: Callable[[np.ndarray], Any], argument: np.ndarray, repeats: int) -> list[float]:
    """At least `repeats` timings; up to twice as many while they add up to under REPEAT_BUDGET_S (noise)."""
    seconds = [_seconds(fn, argument) for _ in range(repeats)]
    while len(seconds) < 2 * repeats and sum(seconds) < REPEAT_BUDGET_S:
        seconds.append(_seconds(fn, argument))
    return seconds


def _seconds(fn: Callable[[np.ndarray], Any], argument: np.ndarray) -> float:
    start = time.perf_counter()
    fn(argument)
    return time.perf_counter() - start


def families_for(items: np.ndarray) -> Iterator[Callable[[], Family]]:
    """The indexes to compare at this corpus size (settings scale with sqrt(N), as the libraries advise)."""
    n = len(items)
    root = int(np.sqrt(n))
    yield lambda: brute_force_family(items)
    grid = tree_candidates(n, K)
    searched = sorted({p.num_leaves_to_search for p in grid})
    yield functools.partial(scann_family, items, grid[0].num_leaves, searched, sorted({p.reorder for p in grid}))
    nlist = 4 * root
    probed = ivf_probes(nlist)
    yield lambda: faiss_family(items, "faiss-ivf-flat", f"IVF{nlist},Flat", ivf_searches(probed))
    yield lambda: faiss_family(
        items, "faiss-ivf-pq", f"IVF{nlist},PQ{DIM // 2}x4fs,RFlat", refined_ivf_searches(probed[::3], [1, 4, 16, 64])
    )
    if n > LARGEST_GRAPH_INDEX:
        return
    yield lambda: faiss_family(items, "faiss-hnsw", "HNSW32,Flat", hnsw_searches([100, 200, 400, 800, 1600]))
    if n <= 200_000:
        yield lambda: annoy_family(items, num_trees=50, search_k_factors=[1, 4, 16])
    else:
        yield lambda: annoy_family(items, num_trees=20, search_k_factors=[1, 4, 16, 64])


def run_scale(scale: Scale, seed: int) -> dict[str, Any]:
    """Every family at one corpus size; the exact top-K comes from the brute-force baseline of the same run."""
    items, queries = realistic_embeddings(scale.num_items, scale.num_queries, seed)
    points: list[dict[str, Any]] = []
    builds: dict[str, float] = {}
    exact: np.ndarray | None = None
    for make_family in families_for(items):
        family = make_family()
        builds[_family_key(family)] = round(family.build_s, 2)
        for setting in family.settings:
            point = measure(setting, queries, exact, scale)
            found = point.pop("_found")
            if exact is None:
                exact = found
            point["build_s"] = round(family.build_s, 2)
            points.append(point)
        del family
    assert exact is not None
    tuned, tuned_point = export_tuned(items, queries, exact, scale, points)
    points.append(tuned_point)
    return {
        "corpus": describe(load_params()),
        "num_items": scale.num_items,
        "num_queries": scale.num_queries,
        "dim": DIM,
        "k": K,
        "build_s": builds,
        "points": points,
        "best_at_recall": best_at_recall(points),
        "export_tuned": tuned,
    }


def _family_key(family: Family) -> str:
    params = family.settings[0].params
    if family.library == "scann":
        return f"scann (num_leaves={params['num_leaves']})"
    return family.library


def best_at_recall(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per library and recall target: the fastest batched setting reaching it (its speed-up over brute force and
    its single-query p50), and the best single-query rate (1000 / p50 ms) of any setting reaching it."""
    baseline = next(p for p in points if p["library"] == BRUTE_FORCE)
    rows = []
    for library in dict.fromkeys(p["library"] for p in points if p["library"] != BRUTE_FORCE):
        row: dict[str, Any] = {"library": library}
        for target in RECALL_TARGETS:
            reaching = [p for p in points if p["library"] == library and p["recall"] >= target]
            best = max(reaching, key=lambda p: p["batch_qps"], default=None)
            row[f"qps@{target}"] = None if best is None else round(best["batch_qps"], 1)
            row[f"speedup@{target}"] = None if best is None else round(best["batch_qps"] / baseline["batch_qps"], 2)
            row[f"p50_ms@{target}"] = None if best is None else round(best["latency_ms_p50"], 3)
            one = min(reaching, key=lambda p: p["latency_ms_p50"], default=None)
            row[f"single_qps@{target}"] = None if one is None else round(1000 / one["latency_ms_p50"], 1)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sizes", type=_sizes, default=None,
                        help=f"comma-separated corpus sizes (default {DEFAULT_SIZES}, quick {QUICK_SIZES})")
    args = parser.parse_args(argv)
    result = SectionResult("ann_peers", args.quick)
    sizes = args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES)
    scales = [scale_for(n, args.quick) for n in sizes]
    result.payload["baseline"] = f"{BRUTE_FORCE}: exact top-{K} by inner product, same embeddings and queries"
    result.payload["scales"] = [run_scale(scale, args.seed) for scale in scales]
    result.write(args.out)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes: expected comma-separated integers, got {text!r}") from None
    if any(n <= K for n in sizes):
        raise argparse.ArgumentTypeError(f"--sizes: every size must exceed k = {K}, got {text!r}")
    return sizes


if __name__ == "__main__":
    main()
