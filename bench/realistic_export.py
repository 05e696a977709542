"""A trained candidate generator serving a realistic catalogue of any size (for the serving benchmarks).

A small candidate generator is trained on a synthetic log (TRAIN_OVERRIDES: real query tower, real
requests). Its catalogue is then replaced by `size` items drawn from the fitted corpus model
(bench.corpus) placed in this model's embedding frame (its item mean, principal axes and scale), so
the tower's queries meet items spread like a trained model's, and `export_retrieval` exports the
`retrieval` (ScaNN, auto-tuned to export.scann_target_recall) and `retrieval_bruteforce` SavedModels
exactly as the task does.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time
from typing import Any

import numpy as np

from bench.corpus import describe, frame_of, generate, load_params

K = 100
TRAIN_OVERRIDES: dict[str, Any] = {
    "synthetic.num_users": 1500,
    "synthetic.num_items": 1000,
    "synthetic.events_per_user": 30,
    "retrieval.epochs": 2,
    "retrieval.eval_max_users": 300,
    "export.max_k": K,
}


@dataclasses.dataclass
class TrainedSetup:
    """The trained model, its data and config, and real requests (contract inputs, rows [R])."""

    trained: Any
    data: Any
    config: Any
    requests: dict[str, np.ndarray]


def train_small(max_requests: int) -> TrainedSetup:
    """Trains the small candidate generator; `max_requests` requests are sampled from its test period."""
    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.retrieval.export import sample_requests
    from trainer.retrieval.train import train_retrieval
    from trainer.run import RunContext

    config = load_config(None, TRAIN_OVERRIDES)
    data = prepare(config)
    with tempfile.TemporaryDirectory() as folder:
        trained = train_retrieval(config, data, RunContext(pathlib.Path(folder) / "run"))
    return TrainedSetup(trained, data, config, sample_requests(data, limit=max_requests))


def realistic_catalogue(trained_embeddings: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`size` embeddings [size, d] float32 in the frame of `trained_embeddings` [M, d], and ids "item0".."""
    params = load_params()
    embeddings = generate(params, size, seed, frame_of(trained_embeddings, params))
    return embeddings, np.array([f"item{i}" for i in range(size)], dtype=object)


def corpus_note(setup: TrainedSetup) -> str:
    """The corpus every figure of these sections was measured on."""
    return (f"{describe(load_params())}; placed in the frame of a candidate generator trained on a synthetic log "
            f"({TRAIN_OVERRIDES}), whose query tower answers real requests")


def export_realistic(setup: TrainedSetup, size: int, base_dir: pathlib.Path) -> tuple[Any, dict[str, Any], float]:
    """Exports `retrieval` and `retrieval_bruteforce` over a realistic catalogue of `size` items.

    Returns:
        the model with the new catalogue (a RetrievalResult), the exported paths by model name, and the export
        seconds (ScaNN tuning included).
    """
    from trainer.retrieval.export import export_retrieval

    embeddings, ids = realistic_catalogue(setup.trained.item_embeddings, size, seed=size)
    corpus = dataclasses.replace(setup.trained, item_embeddings=embeddings, item_ids=ids)
    started = time.perf_counter()
    paths = export_retrieval(corpus, setup.data, setup.config.export, base_dir)
    return corpus, paths, time.perf_counter() - started
