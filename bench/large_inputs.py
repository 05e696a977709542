"""Large inputs: peak memory of streaming preprocessing + TFRecord reading as the log grows 1x, 4x, 16x.

`python -m bench.large_inputs --out FILE.json [--quick]`

The 1x log is the default config's synthetic log (2000 users, 1000 items, ~80k events; --quick: 200
users, ~3k events, and only the 1x and 16x sizes). The k-x log is k copies of it, each shifted past
the end of the one before: the same population logging for k times as long. It is written to a CSV
on disk one copy at a time (the writer never holds more than the 1x log). For each size, two fresh
processes measure their peak RSS (ru_maxrss):
- streaming (this project's large-input path): `trainer.preprocess.preprocess` over the CSV (chunks of
  50k rows, shards of 100k records; --quick: 2k and 5k), then one shuffled pass over the training
  split with `Manifest.read` (batches of 512, shuffle buffer 10k; --quick: 1k);
- in memory (the baseline, what `trainer.data.bundle.prepare` does): the whole CSV into pandas,
  `temporal_split`, `event_examples` of every split, then one shuffled pass over the training examples
  with `trainer.data.pipeline.make_dataset`.
- train (every size; --quick: 1x and 16x): one retrieval training epoch streamed from the shards the
  streaming worker wrote (`trainer.retrieval.inputs.ShardedTrainingInput`, what
  `python -m trainer.task --data.prepared_dir` trains on), the model built from the manifest.
- rank (every size): one epoch of the configured ranking model streamed from the same shards
  (`trainer.ranking.rows.StreamedExamples`), its feature statistics from the in-memory sample that
  `data.prepared_dir` runs hold, capped here at `Sizes.rank_sample` examples (the 1x log's training split
  is larger) so that every size holds the same sample; with the default cap (200k) the sample grows
  with the log up to 200k examples and then stays put.
All report the RSS right after importing TensorFlow too, so the growth above the fixed runtime is shown
("above runtime"). Memory stays flat when the streaming peak at 16x is close to the one at 1x; the
in-memory peak grows with the log. Per-user state (H + S values per user) and the vocabularies grow with
users and items, not with events, so this growth-in-time log is the case the streaming path keeps flat.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

from bench.cli import SectionResult, section_parser
from bench.harness import REPO_ROOT

SCALES = {False: (1, 4, 16), True: (1, 16)}  # --quick: two sizes (each size costs two fresh TF processes)
BATCH_SIZE = 512
QUICK_SYNTHETIC = {"num_users": 200, "num_items": 200, "events_per_user": 15}
WORKER_TIMEOUT_S = 900
PATHS = ("stream", "memory", "train", "rank")


@dataclasses.dataclass(frozen=True)
class Sizes:
    """The bounded buffers of the streaming path: log rows per chunk, records per shard, shuffle buffer, and the
    in-memory sample of the ranking stage."""

    chunk_size: int
    shard_size: int
    shuffle_buffer: int
    rank_sample: int


SIZES = {False: Sizes(chunk_size=50_000, shard_size=100_000, shuffle_buffer=10_000, rank_sample=20_000),
         True: Sizes(chunk_size=2_000, shard_size=5_000, shuffle_buffer=1_000, rank_sample=2_000)}


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    parser.add_argument("--log-dir", type=pathlib.Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.log_dir, args.quick)))
        return
    result = SectionResult("large_inputs", args.quick)
    result.payload.update(measure(args.quick))
    result.write(args.out)


def measure(quick: bool) -> dict[str, Any]:
    """Runs both paths on every log size; returns the rows, the 16x/1x ratios and the notes."""
    rows = []
    sizes = SIZES[quick]
    dataset = _base_dataset(quick)
    with tempfile.TemporaryDirectory(prefix="large_inputs_") as folder:
        for scale in SCALES[quick]:
            log_dir = pathlib.Path(folder) / f"log_{scale}x"
            events, csv_bytes = write_log(dataset, log_dir, scale)
            row: dict[str, Any] = {"scale": scale, "events": events, "csv_mb": round(csv_bytes / 2**20, 1)}
            for path in PATHS:
                figures = _run_worker_process(path, log_dir, quick)
                row.update({f"{path}_{name}": value for name, value in figures.items()})
            rows.append(row)
    largest, smallest = rows[-1], rows[0]
    ratios = {f"{path}_{kind}_ratio_{largest['scale']}x_over_1x":
              round(largest[f"{path}_{kind}_mb"] / max(smallest[f"{path}_{kind}_mb"], 1e-9), 2)
              for path in PATHS for kind in ("peak", "above_runtime")}
    columns = ["scale", "events", "csv_mb", "stream_peak_mb", "stream_above_runtime_mb", "stream_wall_s",
               "memory_peak_mb", "memory_above_runtime_mb", "memory_wall_s", "stream_shards",
               "stream_examples_read", "train_peak_mb", "train_above_runtime_mb", "train_wall_s", "train_steps",
               "rank_peak_mb", "rank_above_runtime_mb", "rank_wall_s", "rank_steps"]
    return {
        "baseline": "in-memory path: the whole log in pandas + event_examples + make_dataset (bundle.prepare's way)",
        "tables": [{"title": "Peak RSS (MiB) against log size", "columns": columns, "rows": rows}],
        "ratios": ratios,
        "rows": rows,
        "notes": [
            ("peak = ru_maxrss of a fresh process; above_runtime = peak minus the RSS right after importing "
             "TensorFlow and the project (the fixed cost of the runtime)"),
            (f"streaming: chunks of {sizes.chunk_size} rows, shards of {sizes.shard_size} records, GZIP; reading: "
             f"one shuffled pass (buffer {sizes.shuffle_buffer}) over the training split in batches of {BATCH_SIZE}"),
            "the k-x log is the 1x synthetic log repeated k times later in time (same users and items)",
            ("train: one epoch of the configured retrieval model (batch size retrieval.batch_size) streamed from "
             f"the training shards, shuffle buffer {sizes.shuffle_buffer}"),
            ("rank: one epoch of the configured ranking model (ranking.model, batch size ranking.batch_size, "
             "ranking.num_negatives negatives drawn in the pipeline) streamed from the training shards; its feature "
             f"statistics from a sample of {sizes.rank_sample} examples at every size "
             "(data.prepared_sample_examples, default 200k, bounds it in a real run)"),
        ],
    }


def write_log(dataset: Any, folder: pathlib.Path, scale: int) -> tuple[int, int]:
    """Writes events.csv (the 1x log `scale` times, shifted in time), users.csv, items.csv; returns (events, bytes).

    Args:
        dataset: the 1x `trainer.data.schema.Dataset`.
        folder: a new folder.
        scale: copies of the log.
    """
    from trainer.data.table_csv import write_items, write_users

    folder.mkdir(parents=True)
    events = dataset.events
    period = int(events["timestamp"].max() - events["timestamp"].min()) + 1
    path = folder / "events.csv"
    for copy in range(scale):
        shifted = events.assign(timestamp=events["timestamp"] + copy * period)
        shifted.to_csv(path, mode="a", header=copy == 0, index=False)
    write_users(dataset.users, folder / "users.csv")
    write_items(dataset.items, folder / "items.csv")
    return len(events) * scale, path.stat().st_size


def run_worker(path: str, log_dir: pathlib.Path, quick: bool) -> dict[str, Any]:
    """In a fresh process: one path over the log in `log_dir`; its peak RSS and timings."""
    start = time.perf_counter()
    import trainer  # noqa: F401, I001  (before TensorFlow: it selects tf-keras)
    import tensorflow as tf  # noqa: F401  (the runtime both paths pay for, measured before the work)
    import trainer.config  # noqa: F401  (part of that runtime too)

    runtime_mb = _rss_mb()
    config = _config(quick)
    sizes = SIZES[quick]
    workers = {"stream": _stream, "memory": _in_memory, "train": _train_epoch, "rank": _rank_epoch}
    figures = workers[path](log_dir, config, sizes)
    peak_mb = _peak_rss_mb()
    return {**figures, "peak_mb": round(peak_mb, 1), "runtime_mb": round(runtime_mb, 1),
            "above_runtime_mb": round(peak_mb - runtime_mb, 1), "wall_s": round(time.perf_counter() - start, 2)}


def _stream(log_dir: pathlib.Path, config: Any, sizes: Sizes) -> dict[str, Any]:
    from trainer.data.event_stream import CsvEventSource
    from trainer.data.table_csv import read_items, read_users
    from trainer.preprocess import preprocess

    out = log_dir / "prepared"
    manifest = preprocess(CsvEventSource(log_dir / "events.csv", sizes.chunk_size),
                          read_users(log_dir / "users.csv"), read_items(log_dir / "items.csv"), config.data, out,
                          sizes.shard_size)
    read = 0
    for batch in manifest.read("train", BATCH_SIZE, shuffle=True, seed=1, shuffle_buffer=sizes.shuffle_buffer):
        read += int(batch["item_id"].shape[0])
    if read != manifest.examples("train"):
        raise RuntimeError(f"read {read} training examples, the manifest lists {manifest.examples('train')}")
    return {"examples_read": read, "shards": sum(len(manifest.files(s)) for s in ("train", "validation", "test"))}


def _train_epoch(log_dir: pathlib.Path, config: Any, sizes: Sizes) -> dict[str, Any]:
    from trainer.context import ModelContext
    from trainer.data.catalog import ItemCatalog
    from trainer.data.tfrecord import Manifest
    from trainer.fitting import EXAMPLE_LOSS
    from trainer.optimizers import make_optimizer
    from trainer.retrieval.features import FeatureSet
    from trainer.retrieval.inputs import ShardedTrainingInput
    from trainer.retrieval.train import build_model

    manifest = Manifest.load(log_dir / "prepared")
    retrieval = config.retrieval
    features = FeatureSet.resolve(retrieval.features, manifest.available_features)
    context = ModelContext.build(manifest.vocab, ItemCatalog.from_items(manifest.items()), manifest.t_max,
                                 manifest.t_span)
    model = build_model(retrieval, features, context)
    model.compile(optimizer=make_optimizer(retrieval.optimizer, retrieval.learning_rate))
    batches = ShardedTrainingInput(manifest).batches(retrieval.batch_size, seed=1, shuffle_buffer=sizes.shuffle_buffer)
    history = model.fit(batches.prefetch(1), epochs=1, verbose=0).history
    return {"steps": -(-manifest.examples("train") // retrieval.batch_size),
            "loss": round(float(history[EXAMPLE_LOSS][-1]), 4)}


def _rank_epoch(log_dir: pathlib.Path, config: Any, sizes: Sizes) -> dict[str, Any]:
    import numpy as np

    from trainer.context import ModelContext
    from trainer.data.catalog import ItemCatalog
    from trainer.data.pipeline import AGE_BUCKETS
    from trainer.data.prepared import sample_examples
    from trainer.data.tfrecord import Manifest
    from trainer.ranking.models import build_model
    from trainer.ranking.protocol import RankingData, SampledSet
    from trainer.ranking.train import FitOptions, fit

    manifest = Manifest.load(log_dir / "prepared")
    space = ModelContext.build(manifest.vocab, ItemCatalog.from_items(manifest.items()), manifest.t_max,
                               manifest.t_span, manifest.available_features, AGE_BUCKETS)
    sample = sample_examples(manifest, "train", sizes.rank_sample, config.data.seed)
    no_held_out = SampledSet(inputs={}, watch_time=np.zeros(0, np.float32))
    data = RankingData(name="temporal", space=space, train=sample, seen={}, validation=None, test=no_held_out,
                       full_ranking=None, train_stream=manifest)
    options = dataclasses.replace(FitOptions.from_config(config.ranking, config.seed), epochs=1, resume=False)
    history = fit(build_model(config.ranking.model, space, config.ranking), data, options)
    return {"steps": -(-manifest.examples("train") // options.batch_size), "loss": round(float(history["loss"][0]), 4),
            "sample_examples": len(sample["item_id"])}


def _in_memory(log_dir: pathlib.Path, config: Any, sizes: Sizes) -> dict[str, Any]:
    import pandas as pd

    from trainer.data.examples import event_examples
    from trainer.data.pipeline import make_dataset
    from trainer.data.schema import Dataset, validate_events
    from trainer.data.sources import drop_sparse_users
    from trainer.data.splits import temporal_split
    from trainer.data.table_csv import read_items, read_users

    raw = pd.read_csv(log_dir / "events.csv", dtype={"user_id": str, "item_id": str, "query": str})
    dataset = drop_sparse_users(Dataset("log", validate_events(raw, "events.csv"), read_users(log_dir / "users.csv"),
                                        read_items(log_dir / "items.csv")), config.data.min_events_per_user)
    del raw
    split = temporal_split(dataset.events, config.data.validation_fraction, config.data.test_fraction)
    data = config.data
    examples = {name: event_examples(events, dataset.users, data.history_length, data.search_history_length,
                                     history_events=dataset.events)
                for name, events in (("train", split.train), ("validation", split.validation), ("test", split.test))}
    read = 0
    for batch in make_dataset(examples["train"], BATCH_SIZE, shuffle=True, seed=1):
        read += int(batch["item_id"].shape[0])
    return {"examples_read": read}


def _run_worker_process(path: str, log_dir: pathlib.Path, quick: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.large_inputs", "--out", "-", "--worker", path, "--log-dir", str(log_dir)]
    done = subprocess.run(command + (["--quick"] if quick else []), check=False, capture_output=True, text=True,
                          timeout=WORKER_TIMEOUT_S, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{path} worker failed ({done.returncode}):\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def _config(quick: bool) -> Any:
    """The default config (--quick: the small synthetic log), as the parent and every worker load it."""
    from trainer.config import load_config

    return load_config(overrides={f"synthetic.{k}": v for k, v in QUICK_SYNTHETIC.items()} if quick else None)


def _base_dataset(quick: bool) -> Any:
    from trainer.data.sources import load_dataset

    config = _config(quick)
    return load_dataset(config.data, config.synthetic)


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main()
