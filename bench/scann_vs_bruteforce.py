"""ScaNN against brute force through the exported SavedModels: recall@100 and queries per second.

`python -m bench.scann_vs_bruteforce --out FILE.json [--quick] [--sizes 100000,1000000,5000000]`

A candidate generator is trained on a small synthetic dataset (real query tower, real requests).
For each corpus size N its catalogue is replaced by a realistic corpus of N items (bench.corpus: the
spectrum and norm spread of a trained two-tower model's item embeddings, placed in this model's
frame; bench.realistic_export), and `export_retrieval` exports both models exactly as the task does
(ScaNN auto-tuned to export.scann_target_recall). Each version is then loaded the way TF Serving
loads it (serving.session_model.SessionModel: a session with the deploy manifests' thread flags,
bench.machine.serving_thread_flags; signature tensors fed by name, strings as bytes) and queried
with real requests: recall@100 of `retrieval` against `retrieval_bruteforce` (the baseline, same
run), and QPS for single requests (sequential, batch 1) and batched requests (batch 64). Raw ScaNN
is the pybind searcher built with the exported setting over the same items, fed the query tower's
embeddings of the same requests (no session, no query tower), i.e. the search cost the SavedModel's overhead
is measured against; like the export it indexes the mean-centred items when the export's index is
centred (adding q·mu back, a constant per query, is left out: it does not change the ids). It runs
twice: asked for K neighbours with the exported setting as tuned, and asked for what the export asks
its searcher per request (K + H neighbours for H watched items, leaves and re-scored candidates scaled
by (K + H) / K: scann_index.over_fetch_settings), so the SavedModel's overhead splits into the wider
search and the rest (query tower, dropping seen items, session). The session floor is that over-fetched
search as the ScaNN TF op alone in a TF session with the serving thread flags, fed query embeddings: the
least any session-served SavedModel with this index spends per request here (the session's own cost, and
the TF op's against the pybind searcher's), so its QPS over brute force's bounds what the export can reach.
Passes alternate between the variants (median of 3), so a load spike on the shared machine hits all of
them alike.
--quick: 100k items only, fewer requests.
"""

from __future__ import annotations

import pathlib
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.cli import SectionResult, section_parser
from bench.machine import serving_thread_flags
from bench.realistic_export import K, TrainedSetup, corpus_note, export_realistic, train_small
from recsys_common.contract import SIGNATURE_NAME

BATCH = 64
PASSES = 3
RAW = "raw ScaNN (pybind, same setting)"
RAW_OVER_FETCH = "raw ScaNN (pybind, the export's over-fetch)"
SESSION_FLOOR = "session floor (ScaNN TF op alone in a session, the export's over-fetch)"


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")], default=None,
                        help="corpus sizes (default 100000,1000000,5000000; --quick: 100000)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000, 5_000_000])
    result = SectionResult("scann_vs_bruteforce", args.quick)
    result.payload.update(measure(sizes, single_requests=100 if args.quick else 300,
                                  batched_requests=256 if args.quick else 512))
    result.write(args.out)


def measure(sizes: Sequence[int], single_requests: int, batched_requests: int) -> dict[str, Any]:
    setup = train_small(max(single_requests, batched_requests))
    with tempfile.TemporaryDirectory() as folder:
        rows = [measure_size(setup, size, single_requests, pathlib.Path(folder) / f"models_{size}")
                for size in sizes]
    target = setup.config.export.scann_target_recall
    return {
        "baseline": "retrieval_bruteforce (exact MatMul + TopKV2 over the same item embeddings), same run",
        "corpus": corpus_note(setup),
        "k": K,
        "rows": rows,
        "tables": [{"title": f"Exported retrieval models, recall@{K} against brute force and QPS (SessionModel)",
                    "columns": ["num_items", "variant", "recall", "single_qps", "batch_qps", "speedup_single",
                                "speedup_batch", "savedmodel_vs_raw_single", "savedmodel_vs_raw_over_fetch_single",
                                "savedmodel_vs_session_floor_single", "index"],
                    "rows": table_rows(rows)}],
        "targets": [target_row(row, target) for row in rows],
        "notes": [(f"Corpus: {corpus_note(setup)}."),
                  (f"Target recall@{K}: {target}; corpora of at least "
                  f"{setup.config.export.scann_brute_force_below} items get a tree-AH index (num_leaves ~ sqrt(N))."),
                  ("QPS: single = sequential batch-1 requests; batch = rows per second in batches of "
                  f"{BATCH}; each the median of {PASSES} alternating passes, in one process on this machine. "
                   f"{RAW}: the same requests' query embeddings, without session or query tower."),
                  ("savedmodel_vs_raw_single: the exported ScaNN SavedModel's single-request time over raw "
                   "ScaNN's (1 = no overhead); savedmodel_vs_raw_over_fetch_single: the same over raw ScaNN asked "
                   "what the export asks its searcher (K + H neighbours, leaves and re-scoring scaled by (K + H) / K "
                   "for H watched items), so the rest is the query tower, the drop of seen items and the session."),
                  (f"{RAW_OVER_FETCH}: recall of the first {K} of its K + H neighbours."),
                  (f"{SESSION_FLOOR}: the over-fetched search as the ScaNN TF op with nothing else in a TF session "
                   "(serving thread flags), fed the query embeddings; savedmodel_vs_session_floor_single: the export's "
                   "single-request time over it. No session-served SavedModel with this index answers faster, so "
                   "its speed-up over brute force bounds the export's.")],
    }


def measure_size(setup: TrainedSetup, size: int, single_requests: int, base_dir: pathlib.Path) -> dict[str, Any]:
    """Exports a realistic corpus of `size` items, loads both versions in sessions and measures all variants."""
    from recsys_common import contract
    from serving.session_model import SessionModel, serving_session_config
    from trainer.export.layout import read_metadata
    from trainer.retrieval.model import embed_queries
    from trainer.retrieval.scann_tuning import exact_top_k, recall_against

    corpus, paths, export_s = export_realistic(setup, size, base_dir)
    metadata = read_metadata(paths[contract.RETRIEVAL])
    scann = metadata["index"]["scann"]
    params, centre = scann["params"], bool(scann.get("centred", False))
    requests = as_fed(setup.requests)
    queries = embed_queries(corpus.model.query_tower, setup.requests)
    raw = raw_searcher(corpus.item_embeddings, params, centre=centre)
    over_fetch = over_fetch_arguments(params, metadata["k"], requests[contract.WATCH_HISTORY].shape[1], size)
    threads = serving_thread_flags()
    config = serving_session_config(threads["tensorflow_intra_op_parallelism"],
                                    threads["tensorflow_inter_op_parallelism"])
    models = {name: SessionModel.load(path, session_config=config) for name, path in paths.items()}
    floor_session, floor_search = session_floor(corpus.item_embeddings, params, centre, over_fetch, config)
    try:
        answers = {name: _run(model, requests)[contract.ITEM_IDS] for name, model in models.items()}
        runners: dict[str, Callable[[int, int], Any]] = {
            name: _session_runner(model, requests) for name, model in models.items()}
        runners[RAW] = _raw_runner(raw, queries, {"final_num_neighbors": K})
        runners[RAW_OVER_FETCH] = _raw_runner(raw, queries, over_fetch)
        runners[SESSION_FLOOR] = _floor_runner(floor_search, queries)
        total = len(requests[contract.USER_ID])
        speed = {name: {"single_qps": rate} for name, rate in _rates(runners, 1, single_requests).items()}
        for name, rate in _rates(runners, BATCH, total).items():
            speed[name]["batch_qps"] = rate
        floor_found = floor_search(queries)[0][:, :K]
    finally:
        for model in models.values():
            model.close()
        floor_session.close()
    raw_found = np.asarray(raw.search_batched(queries, K)[0])
    over_fetch_found = np.asarray(raw.search_batched(queries, **over_fetch)[0])[:, :K]
    exact = exact_top_k(queries, corpus.item_embeddings, K)
    return {"num_items": size, "export_s": round(export_s, 1),
            "recall": recall_against(answers[contract.RETRIEVAL], answers[contract.RETRIEVAL_BRUTEFORCE]),
            "raw_recall": recall_against(raw_found, exact),
            "raw_over_fetch_recall": recall_against(over_fetch_found, exact), "raw_over_fetch": over_fetch,
            "session_floor_recall": recall_against(floor_found, exact),
            "requests": total, "speed": speed, "scann_params": params,
            "centred": centre, "tuning_recall": scann["recall"],
            "export_metadata_latency_ms": metadata["latency_ms"]}


def raw_searcher(embeddings: np.ndarray, params: dict[str, Any], centre: bool = False) -> Any:
    """The pybind ScaNN searcher with the exported setting over embeddings [M, d] (centred on their mean when
    `centre`, as the export indexes them), one search thread like a session's op."""
    from scann.scann_ops.py import scann_ops_pybind

    from trainer.retrieval.scann_index import AH_THRESHOLD, DISTANCE, TREE_TRAINING_SAMPLE

    indexed = indexed_as_exported(embeddings, centre)
    builder = scann_ops_pybind.builder(indexed, K, DISTANCE)
    if params["brute_force"]:
        builder = builder.score_brute_force()
    else:
        builder = (builder.tree(num_leaves=params["num_leaves"], num_leaves_to_search=params["num_leaves_to_search"],
                                training_sample_size=min(len(embeddings), TREE_TRAINING_SAMPLE))
                   .score_ah(params["dimensions_per_block"], anisotropic_quantization_threshold=AH_THRESHOLD)
                   .reorder(params["reorder"]))
    return builder.build()


def indexed_as_exported(embeddings: np.ndarray, centre: bool) -> np.ndarray:
    """The points [M, d] the export indexes: `embeddings` centred on their mean when `centre` (the export's
    metadata says whether it did), float32 and contiguous."""
    from trainer.retrieval.scann_index import centred, item_centre

    return centred(embeddings, item_centre(embeddings) if centre else None)


def session_floor(embeddings: np.ndarray, params: dict[str, Any], centre: bool, arguments: dict[str, int],
                  config: Any) -> tuple[Any, Callable[[np.ndarray], Any]]:
    """The exported setting's ScaNN TF op, and nothing else, in a TF session with `config` (the serving thread flags):
    a new searcher over `embeddings` [M, d] (centred on their mean when `centre`, as the export indexes them),
    asked the pybind `arguments`. Returns the session (close it) and search(queries [B, d]) -> (indices [B, n]
    int32, scores [B, n] float32), built on its first call."""
    import tensorflow as tf

    from trainer.retrieval.scann_index import ScannParams, build_searcher

    graph = tf.Graph()
    with graph.as_default():
        indexed = indexed_as_exported(embeddings, centre)
        searcher = build_searcher(indexed, ScannParams(**params), K, shared_name="session_floor")
        queries = tf.compat.v1.placeholder(tf.float32, [None, indexed.shape[1]], name="queries")
        found = searcher.search_batched(queries, **arguments)
        session = tf.compat.v1.Session(graph=graph, config=config)
    return session, session.make_callable([found.indices, found.distances], [queries])


def over_fetch_arguments(params: dict[str, Any], k: int, history_width: int, num_items: int) -> dict[str, int]:
    """The pybind search arguments of what the exported `retrieval` asks its searcher for one request with
    `history_width` watched items: min(k + H, num_items) neighbours, the leaves and re-scored candidates scaled
    as the export's ScannLayer scales them (the tree's setting `params` was tuned for k)."""
    from trainer.retrieval.inference import fetch_width
    from trainer.retrieval.scann_index import ScannParams, over_fetch_settings

    width = fetch_width(k, history_width, num_items)
    arguments = {"final_num_neighbors": width}
    if not params["brute_force"]:
        leaves, reorder = over_fetch_settings(ScannParams(**params), k, width)
        arguments["leaves_to_search"] = int(leaves)
        if reorder is not None:
            arguments["pre_reorder_num_neighbors"] = int(reorder)
    return arguments


def _run(model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return model.run(SIGNATURE_NAME, inputs)


def as_fed(requests: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The requests with strings as UTF-8 bytes, the form a server decodes a request's TensorProto to (once,
    before any timing: converting inside the timed loop would time NumPy, not the model)."""
    return {name: _bytes(values) for name, values in requests.items()}


def _bytes(values: np.ndarray) -> np.ndarray:
    if values.dtype != object and values.dtype.kind != "U":
        return values
    fed = np.empty(values.size, dtype=object)
    fed[:] = [value if isinstance(value, bytes) else str(value).encode("utf-8") for value in values.reshape(-1)]
    return fed.reshape(values.shape)


def _session_runner(model: Any, fed: dict[str, np.ndarray]) -> Callable[[int, int], Any]:
    """Runs rows [start, start + batch) of the already fed requests (see `as_fed`) and returns the answer."""

    def run(start: int, batch: int) -> dict[str, np.ndarray]:
        return _run(model, {name: values[start:start + batch] for name, values in fed.items()})

    return run


def _raw_runner(searcher: Any, queries: np.ndarray, arguments: dict[str, int]) -> Callable[[int, int], Any]:
    """Searches rows [start, start + batch) of the query embeddings with the pybind `arguments`."""

    def run(start: int, batch: int) -> Any:
        if batch == 1:
            return searcher.search(queries[start], **arguments)
        return searcher.search_batched(queries[start:start + batch], **arguments)

    return run


def _floor_runner(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> Callable[[int, int], Any]:
    """Searches rows [start, start + batch) of the query embeddings with the session floor's search."""

    def run(start: int, batch: int) -> Any:
        return search(queries[start:start + batch])

    return run


def _rates(runners: dict[str, Callable[[int, int], Any]], batch: int, total: int) -> dict[str, float]:
    """Rows per second of each runner answering `total` rows in batches of `batch` (median of alternating passes)."""
    starts = list(range(0, total - batch + 1, batch))
    for run in runners.values():
        run(0, batch)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(PASSES):
        for name, run in runners.items():
            started = time.perf_counter()
            for start in starts:
                run(start, batch)
            rates[name].append(len(starts) * batch / (time.perf_counter() - started))
    return {name: float(np.median(values)) for name, values in rates.items()}


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        exact = row["speed"]["retrieval_bruteforce"]
        params = row["scann_params"]
        scann_index = ("ScaNN brute force" if params["brute_force"] else
                       f"tree {params['num_leaves']}/{params['num_leaves_to_search']} leaves, AH, reorder "
                       f"{params['reorder']}")
        for variant in ("retrieval", RAW, RAW_OVER_FETCH, SESSION_FLOOR, "retrieval_bruteforce"):
            speed = row["speed"][variant]
            recall = {"retrieval": row["recall"], RAW: row["raw_recall"], RAW_OVER_FETCH: row["raw_over_fetch_recall"],
                      SESSION_FLOOR: row["session_floor_recall"]}.get(variant, 1.0)
            entry = {"num_items": row["num_items"], "variant": variant, "recall": recall,
                     "single_qps": speed["single_qps"], "batch_qps": speed["batch_qps"],
                     "speedup_single": speed["single_qps"] / exact["single_qps"],
                     "speedup_batch": speed["batch_qps"] / exact["batch_qps"],
                     "index": "exact" if variant == "retrieval_bruteforce" else scann_index}
            if variant == "retrieval":
                entry["savedmodel_vs_raw_single"] = row["speed"][RAW]["single_qps"] / speed["single_qps"]
                entry["savedmodel_vs_raw_over_fetch_single"] = (row["speed"][RAW_OVER_FETCH]["single_qps"]
                                                                / speed["single_qps"])
                entry["savedmodel_vs_session_floor_single"] = (row["speed"][SESSION_FLOOR]["single_qps"]
                                                               / speed["single_qps"])
            table.append(entry)
    return table


def target_row(row: dict[str, Any], target_recall: float) -> dict[str, Any]:
    """The issue's targets at this size: recall, single-query speed-up over brute force, overhead over raw ScaNN; and
    the same two ratios for the session floor, which bound what any session-served SavedModel can reach."""
    speed = row["speed"]
    floor = speed[SESSION_FLOOR]["single_qps"]
    speedup = speed["retrieval"]["single_qps"] / speed["retrieval_bruteforce"]["single_qps"]
    overhead = speed[RAW]["single_qps"] / speed["retrieval"]["single_qps"]
    over_fetch_overhead = speed[RAW_OVER_FETCH]["single_qps"] / speed["retrieval"]["single_qps"]
    return {"num_items": row["num_items"], "recall": row["recall"], "recall_target": target_recall,
            "single_speedup_vs_bruteforce": round(speedup, 2), "speedup_target": 50.0,
            "savedmodel_vs_raw_single": round(overhead, 2), "overhead_target": 1.5,
            "savedmodel_vs_raw_over_fetch_single": round(over_fetch_overhead, 2),
            "session_floor_speedup_vs_bruteforce": round(floor / speed["retrieval_bruteforce"]["single_qps"], 2),
            "session_floor_vs_raw_over_fetch_single": round(speed[RAW_OVER_FETCH]["single_qps"] / floor, 2),
            "met": bool(row["recall"] >= target_recall and speedup >= 50.0 and overhead <= 1.5)}


if __name__ == "__main__":
    main()
