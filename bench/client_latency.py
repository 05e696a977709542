"""Serving: the thin client's import cost, and recommend() latency through the local server vs in-process.

`python -m bench.client_latency --out FILE.json [--quick] [--items 100000,1000000,5000000] [--retrieval NAME]
[--skip-latency]`

1. Import cost, each in a fresh process (median of N): `import serving.client` against the
   baseline `from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc` (what
   a client built on the official package imports, which loads TensorFlow), and a bare `python`.
   Figures: seconds spent in the import statement, the process's peak RSS after it, and
   whether TensorFlow got loaded.
2. recommend() (retrieve the top 100 -> drop the watched items -> rank -> top 10) at 1, 4 and 16
   concurrent callers (threads sharing one client), over realistic catalogues of 100k, 1M and 5M items
   (bench.realistic_export): retrieval is a trained candidate generator (a small one trained on a
   synthetic log: real query tower, real requests from its test period) exported by `export_retrieval`
   over a catalogue drawn from the fitted corpus model (bench.corpus), i.e. the `retrieval` model with
   ScaNN auto-tuned to the export's recall target, or with `--retrieval retrieval_bruteforce` exact
   search; ranking is a synthetic contract-conforming model over the same catalogue
   (`trainer.export.synthetic_models`: a dot product, so its cost but not its quality is a ranker's):
   - through `python -m serving.server` (gRPC on localhost, a subprocess, no server-side batching, the
     deploy manifests' thread flags: bench.machine.serving_thread_flags);
   - the baseline: the same SavedModels loaded in this process (`tf.saved_model.load`) and the
     same steps called directly (no RPC, no serialisation), in the same run.
   Figures: p50 / p99 latency (ms) and throughput (requests/s) per concurrency level.
"""

from __future__ import annotations

import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from bench.cli import SectionResult, section_parser
from bench.harness import REPO_ROOT
from bench.machine import serving_thread_flags
from bench.realistic_export import TrainedSetup, corpus_note, export_realistic, train_small
from recsys_common import contract

K = 10
CANDIDATES = 100
CONCURRENCY = (1, 4, 16)
IMPORTS = {
    "serving.client": "import serving.client",
    "tensorflow_serving.apis (baseline)": (
        "from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc"
    ),
    "python (nothing imported)": "pass",
}
_PROBE = """
import resource, sys, time
start = time.perf_counter()
{statement}
seconds = time.perf_counter() - start
rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(seconds, rss_mb, any(m.split(".")[0] == "tensorflow" for m in sys.modules))
"""


def import_cost(runs: int) -> list[dict[str, Any]]:
    """Per statement: median import seconds and peak RSS (MiB) over `runs` fresh processes."""
    rows: list[dict[str, Any]] = []
    for name, statement in IMPORTS.items():
        samples = [_probe(statement) for _ in range(runs)]
        rows.append({
            "import": name,
            "seconds_median": round(statistics.median(s[0] for s in samples), 3),
            "rss_mib_median": round(statistics.median(s[1] for s in samples), 1),
            "loads_tensorflow": samples[0][2],
            "runs": runs,
        })
    baseline = rows[1]
    for row in rows:
        row["seconds_vs_baseline"] = round(row["seconds_median"] / baseline["seconds_median"], 3)
        row["rss_vs_baseline"] = round(row["rss_mib_median"] / baseline["rss_mib_median"], 3)
    return rows


def _probe(statement: str) -> tuple[float, float, bool]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run([sys.executable, "-c", _PROBE.format(statement=statement)], capture_output=True,
                            text=True, timeout=600, check=True, env=env, cwd=REPO_ROOT)
    seconds, rss, loaded = result.stdout.split()[-3:]
    return float(seconds), float(rss), loaded == "True"


def users_of(requests: dict[str, np.ndarray], count: int) -> list[dict[str, Any]]:
    """The first `count` real requests (contract inputs, rows [R]) as the client's user mappings."""
    users = []
    for row in range(min(count, len(requests[contract.USER_ID]))):
        user: dict[str, Any] = {}
        for spec in contract.USER_INPUTS:
            if spec.name not in requests:
                continue
            value = requests[spec.name][row]
            user[spec.name] = ([str(v) for v in value if v not in ("", b"")] if spec.rank == 2 else
                               str(value) if spec.dtype == "string" else int(value))
        users.append(user)
    return users


def measure_levels(recommend: Callable[[dict[str, Any]], Any], users: Sequence[dict[str, Any]],
                   requests_per_level: int) -> list[dict[str, Any]]:
    """p50/p99 latency and throughput of `recommend` at each concurrency level."""
    rows = []
    for concurrency in CONCURRENCY:
        count = max(requests_per_level, 4 * concurrency)
        batch = [users[i % len(users)] for i in range(count)]

        def timed(user: dict[str, Any]) -> float:
            start = time.perf_counter()
            recommend(user)
            return time.perf_counter() - start

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(timed, batch[: 2 * concurrency]))  # warm the threads and connections
            start = time.perf_counter()
            latencies = np.array(list(pool.map(timed, batch))) * 1000
            wall = time.perf_counter() - start
        rows.append({
            "concurrency": concurrency,
            "requests": count,
            "p50_ms": round(float(np.percentile(latencies, 50)), 2),
            "p99_ms": round(float(np.percentile(latencies, 99)), 2),
            "throughput_rps": round(count / wall, 1),
        })
    return rows


class InProcessRecommender:
    """The baseline: the exported SavedModels called in this process, the client's steps done directly."""

    def __init__(self, retrieval_dir: pathlib.Path, ranking_dir: pathlib.Path) -> None:
        import tensorflow as tf
        from scann.scann_ops.py import scann_ops  # noqa: F401  (registers the Scann ops for loading)

        self._tf = tf
        self._retrieve = tf.saved_model.load(str(retrieval_dir)).signatures[contract.SIGNATURE_NAME]
        self._rank = tf.saved_model.load(str(ranking_dir)).signatures[contract.SIGNATURE_NAME]

    def recommend(self, user: dict[str, Any]) -> list[tuple[str, float]]:
        tf = self._tf
        features = {}
        for spec in contract.USER_INPUTS:
            value = user.get(spec.name, spec.default)
            if spec.rank == 2:
                features[spec.name] = tf.constant([[""] + list(value or [])])
            else:
                features[spec.name] = tf.constant([value], tf.string if spec.dtype == "string" else tf.int64)
        retrieved = self._retrieve(**features)[contract.ITEM_IDS].numpy()[0]
        seen = set(user.get(contract.WATCH_HISTORY) or ())
        unseen = [item.decode() for item in retrieved if item.decode() not in seen]
        candidates = unseen + [""] * (len(retrieved) - len(unseen))
        scores = self._rank(**features, candidate_ids=tf.constant([candidates]))[contract.SCORES].numpy()[0]
        order = np.argsort(-scores[: len(unseen)], kind="stable")[:K]
        return [(unseen[i], float(scores[i])) for i in order]


def export_models(setup: TrainedSetup, num_items: int, base: pathlib.Path) -> tuple[dict[str, Any], float]:
    """The trained retrieval models over a realistic catalogue and a synthetic ranking model over the same items."""
    from bench import synthetic_models

    corpus, exported, export_s = export_realistic(setup, num_items, base)
    rng = np.random.default_rng(num_items)
    users = (0.1 * rng.standard_normal((synthetic_models.USER_BUCKETS, corpus.item_embeddings.shape[1]))
             ).astype(np.float32)
    catalog = synthetic_models.SyntheticCatalog(np.asarray(corpus.item_ids), corpus.item_embeddings, users, {})
    started = time.perf_counter()
    exported.update(synthetic_models.export_synthetic_models(base, catalog, (contract.RANKING,), k=CANDIDATES))
    return exported, export_s + time.perf_counter() - started


def latency(setup: TrainedSetup, num_items: int, retrieval: str, requests_per_level: int,
            work: pathlib.Path) -> dict[str, Any]:
    """Server and in-process figures for one catalogue size."""
    import trainer  # noqa: F401  (TensorFlow's environment, before the exporter imports TensorFlow)
    from serving import testing
    from serving.client import RecommenderClient
    from trainer.export import server_configs

    models = (retrieval, contract.RANKING)
    base = work / f"saved_models_{num_items}"
    exported, export_s = export_models(setup, num_items, base)
    paths = server_configs.write_server_configs(base, models, keep_versions=1)
    users = users_of(setup.requests, 256)
    started = time.perf_counter()
    with testing.running_server(wait_for=models, model_config_file=paths[server_configs.LOCAL_MODELS_CONFIG],
                                timeout=300, log_dir=work / f"server_{num_items}", **serving_thread_flags()) as server:
        load_s = time.perf_counter() - started
        with RecommenderClient(server.grpc_target, retrieval_model=retrieval, timeout=60,
                               num_candidates=CANDIDATES) as client:
            served = measure_levels(lambda user: client.recommend(user, k=K), users, requests_per_level)
            served_example = [r.item_id for r in client.recommend(users[0], k=K)]
    local = InProcessRecommender(exported[retrieval], exported[contract.RANKING])
    in_process = measure_levels(local.recommend, users, requests_per_level)
    same_answer = served_example == [item for item, _ in local.recommend(users[0])]
    rows = []
    for served_row, local_row in zip(served, in_process):
        for path, row in (("server (gRPC)", served_row), ("in-process", local_row)):
            rows.append({"items": num_items, "retrieval": retrieval, "path": path, **row})
        rows[-2]["p50_vs_in_process"] = round(served_row["p50_ms"] / local_row["p50_ms"], 2)
    return {"rows": rows, "export_s": round(export_s, 1), "server_start_s": round(load_s, 1),
            "same_top_k_as_in_process": same_answer}


def run(quick: bool, items: Sequence[int], retrieval: str, skip_latency: bool,
        import_runs: int | None = None) -> dict[str, Any]:
    imports = import_cost(runs=import_runs or (3 if quick else 7))
    payload: dict[str, Any] = {
        "baseline": "imports: tensorflow_serving.apis in a fresh process; recommend(): the same SavedModels "
                    "called in-process",
        "imports": imports,
        "tables": [{
            "title": f"Client import cost (fresh process, median of {imports[0]['runs']})",
            "columns": ["import", "seconds_median", "rss_mib_median", "loads_tensorflow", "seconds_vs_baseline",
                        "rss_vs_baseline"],
            "rows": imports,
        }],
        "notes": [
            (f"recommend(): retrieve {CANDIDATES} with the {retrieval!r} model, drop watched items, rank, keep {K}; "
             "retrieval: a trained candidate generator exported over the realistic catalogue; ranking: a synthetic "
             "dot-product model over the same items; threads share one client; no server-side batching."),
        ],
    }
    if skip_latency:
        payload["skipped_parts"] = ["recommend() latency (--skip-latency)"]
        return payload
    latency_rows: list[dict[str, Any]] = []
    setup = train_small(256)
    payload["corpus"] = corpus_note(setup)
    payload["notes"].append(f"Corpus: {payload['corpus']}.")
    with tempfile.TemporaryDirectory(prefix="bench-client-") as work:
        for num_items in items:
            exhaustive = retrieval != contract.RETRIEVAL and num_items > 200_000
            per_level = 30 if quick else (60 if exhaustive else 200)
            figures = latency(setup, num_items, retrieval, per_level, pathlib.Path(work))
            latency_rows.extend(figures.pop("rows"))
            payload[f"items_{num_items}"] = figures
    payload["latency"] = latency_rows
    payload["tables"].append({
        "title": f"recommend() latency and throughput (k={K} of {CANDIDATES} candidates)",
        "columns": ["items", "retrieval", "path", "concurrency", "requests", "p50_ms", "p99_ms", "throughput_rps",
                    "p50_vs_in_process"],
        "rows": latency_rows,
    })
    return payload


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--items", default=None,
                        help="comma-separated catalogue sizes (default 100000,1000000,5000000; --quick: 10000)")
    parser.add_argument("--retrieval", default=contract.RETRIEVAL,
                        choices=[contract.RETRIEVAL, contract.RETRIEVAL_BRUTEFORCE],
                        help="the retrieval model: ScaNN (default) or exact brute force")
    parser.add_argument("--skip-latency", action="store_true", help="only the import cost")
    parser.add_argument("--import-runs", type=int, default=None,
                        help="fresh processes per import measured (default 7; --quick: 3)")
    args = parser.parse_args(argv)
    items = [int(n) for n in args.items.split(",")] if args.items else ([10_000] if args.quick else
                                                                           [100_000, 1_000_000, 5_000_000])
    result = SectionResult("client_latency", args.quick)
    result.payload.update(run(args.quick, items, args.retrieval, args.skip_latency, args.import_runs))
    path = result.write(args.out)
    print(json.dumps(result.payload.get("tables", []), indent=1, default=str)[:4000])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
