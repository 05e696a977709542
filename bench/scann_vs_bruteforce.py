"""ScaNN against brute force through the exported SavedModels: recall@100 and queries per second.

`python -m bench.scann_vs_bruteforce --out FILE.json [--quick] [--sizes 100000,1000000]`

A candidate generator is trained on a small synthetic dataset (real query tower, real requests).
For each corpus size N its catalogue is replaced by N items whose embeddings are drawn around the
trained item embeddings (the clusters real catalogues have: many similar items per topic), and
`export_retrieval` exports both models exactly as the task does (ScaNN auto-tuned to
export.scann_target_recall). Each version is then loaded the way TF Serving loads it
(serving.session_model.SessionModel: a session, signature tensors fed by name) and queried with
real requests: recall@100 of `retrieval` against `retrieval_bruteforce` (the baseline, same run),
and QPS for single requests (sequential, batch 1) and batched requests (batch 64). Median of 3 passes.
--quick: 100k items only, fewer requests.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from bench.cli import SectionResult, section_parser

K = 100
BATCH = 64
PASSES = 3
NOISE = 0.35  # per-dimension spread around a trained item, in units of that dimension's std
TRAIN_OVERRIDES: dict[str, Any] = {
    "synthetic.num_users": 1500,
    "synthetic.num_items": 1000,
    "synthetic.events_per_user": 30,
    "retrieval.epochs": 2,
    "retrieval.eval_max_users": 300,
    "export.max_k": K,
}


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=lambda text: [int(s) for s in text.split(",")], default=None,
                        help="corpus sizes (default 100000,1000000; --quick: 100000)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    result = SectionResult("scann_vs_bruteforce", args.quick)
    result.payload.update(measure(sizes, single_requests=100 if args.quick else 300,
                                  batched_requests=256 if args.quick else 512))
    result.write(args.out)


def measure(sizes: Sequence[int], single_requests: int, batched_requests: int) -> dict[str, Any]:
    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.retrieval.export import sample_requests
    from trainer.retrieval.train import train_retrieval
    from trainer.run import RunContext

    config = load_config(None, TRAIN_OVERRIDES)
    data = prepare(config)
    with tempfile.TemporaryDirectory() as folder:
        trained = train_retrieval(config, data, RunContext(pathlib.Path(folder) / "run"))
        requests = sample_requests(data, limit=max(single_requests, batched_requests))
        rows = [measure_size(trained, data, config.export, size, requests, single_requests,
                             pathlib.Path(folder) / f"models_{size}") for size in sizes]
    return {
        "baseline": "retrieval_bruteforce (exact MatMul + TopKV2 over the same item embeddings), same run",
        "k": K,
        "rows": rows,
        "tables": [{"title": f"Exported retrieval models, recall@{K} against brute force and QPS (SessionModel)",
                    "columns": ["num_items", "variant", "recall", "single_qps", "batch_qps", "speedup_single",
                                "speedup_batch", "index"],
                    "rows": table_rows(rows)}],
        "notes": [(f"Target recall@{K}: {config.export.scann_target_recall}; corpora of at least "
                  f"{config.export.scann_brute_force_below} items get a tree-AH index (num_leaves ~ sqrt(N))."),
                  ("QPS: single = sequential batch-1 requests; batch = rows per second in batches of "
                  f"{BATCH}; each the median of {PASSES} passes, in one process on this machine.")],
    }


def measure_size(trained: Any, data: Any, export: Any, size: int, requests: dict[str, np.ndarray],
                 single_requests: int, base_dir: pathlib.Path) -> dict[str, Any]:
    """Exports a corpus of `size` items, loads both versions in sessions and measures them."""
    from recsys_common import contract
    from serving.session_model import SessionModel
    from trainer.export.layout import read_metadata
    from trainer.retrieval.export import export_retrieval
    from trainer.retrieval.scann_tuning import recall_against

    embeddings, ids = synthetic_corpus(trained.item_embeddings, size, np.random.default_rng(size))
    corpus = dataclasses.replace(trained, item_embeddings=embeddings, item_ids=ids)
    started = time.perf_counter()
    paths = export_retrieval(corpus, data, export, base_dir)
    export_s = time.perf_counter() - started
    metadata = read_metadata(paths[contract.RETRIEVAL])
    answers, speed = {}, {}
    for name, path in paths.items():
        with SessionModel.load(path) as model:
            answers[name] = _run(model, requests)[contract.ITEM_IDS]
            speed[name] = {"single_qps": _qps(model, requests, 1, single_requests),
                           "batch_qps": _qps(model, requests, BATCH, len(requests[contract.USER_ID]))}
    recall = recall_against(answers[contract.RETRIEVAL], answers[contract.RETRIEVAL_BRUTEFORCE])
    return {"num_items": size, "export_s": round(export_s, 1), "recall": recall,
            "requests": len(requests[contract.USER_ID]), "speed": speed,
            "scann_params": metadata["index"]["scann"]["params"],
            "tuning_recall": metadata["index"]["scann"]["recall"],
            "export_metadata_latency_ms": metadata["latency_ms"]}


def synthetic_corpus(trained: np.ndarray, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`size` embeddings [size, d] around randomly chosen trained item embeddings, and their ids."""
    centres = trained[rng.integers(0, len(trained), size)]
    noise = rng.normal(size=centres.shape) * (NOISE * trained.std(axis=0))
    return (centres + noise).astype(np.float32), np.array([f"item{i}" for i in range(size)], dtype=object)


def _run(model: Any, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from recsys_common import contract

    return model.run(contract.SIGNATURE_NAME, {name: _feed(values) for name, values in inputs.items()})


def _feed(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype == object else values


def _qps(model: Any, requests: dict[str, np.ndarray], batch: int, total: int) -> float:
    """Rows per second answering `total` rows in requests of `batch` rows (median of PASSES passes)."""
    batches = [{name: _feed(values[start:start + batch]) for name, values in requests.items()}
               for start in range(0, total - batch + 1, batch)]
    _run(model, batches[0])
    rates = []
    for _ in range(PASSES):
        started = time.perf_counter()
        for inputs in batches:
            _run(model, inputs)
        rates.append(len(batches) * batch / (time.perf_counter() - started))
    return float(np.median(rates))


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    table = []
    for row in rows:
        exact = row["speed"]["retrieval_bruteforce"]
        for variant in ("retrieval", "retrieval_bruteforce"):
            speed = row["speed"][variant]
            params = row["scann_params"]
            index = ("exact" if variant != "retrieval" else
                     "ScaNN brute force" if params["brute_force"] else
                     f"tree {params['num_leaves']}/{params['num_leaves_to_search']} leaves, AH, reorder "
                     f"{params['reorder']}")
            table.append({"num_items": row["num_items"], "variant": variant,
                          "recall": row["recall"] if variant == "retrieval" else 1.0,
                          "single_qps": speed["single_qps"], "batch_qps": speed["batch_qps"],
                          "speedup_single": speed["single_qps"] / exact["single_qps"],
                          "speedup_batch": speed["batch_qps"] / exact["batch_qps"], "index": index})
    return table


if __name__ == "__main__":
    main()
