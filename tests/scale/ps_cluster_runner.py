"""Parameter-server training of the retrieval model: 2 workers and 2 ps as in-process servers, this process the chief.

Run by test_parameter_server.py in a subprocess (connecting to a cluster changes the process's TensorFlow
context for good). Trains `train_retrieval` on the tiny config under `trainer.distribute.strategy_for` with
a small shard size, so every embedding table is split over both ps tasks, and prints one JSON line: the
test metrics, every sharded table (shard devices and rows) and the largest difference between the item
table's rows read through the sharded variable and the same rows of the gathered shards.
"""

from __future__ import annotations

import json
import pathlib
import sys
import tempfile

import numpy as np

import trainer  # noqa: F401  (before TensorFlow)
from serving.testing import free_port
from trainer import distribute
from trainer.config import load_config
from trainer.data import bundle
from trainer.run import RunContext

MIN_SHARD_BYTES = 1 << 10
# Asynchronous parameter-server training lags a little behind synchronous training when a
# worker is starved for CPU: three epochs keep the learned model clearly above popularity.
# Adagrad (as Wide & Deep trains its deep part): Keras' sparse Adam update is five separate ops
# (decay m and v over the whole table, two scatter-adds, divide by sqrt(v) + 1e-7), which two
# workers interleave on the ps: its loss spiked in some runs, and once (in CI) the model ended at
# popularity's recall. Adagrad's update is one fused kernel.
PS_OVERRIDES = {"retrieval.epochs": 3, "retrieval.optimizer": "adagrad", "retrieval.learning_rate": 0.1}


def main(config_path: str) -> None:
    import tensorflow as tf

    from trainer.retrieval.train import train_retrieval

    cluster = {"chief": [f"localhost:{free_port()}"], "worker": [f"localhost:{free_port()}" for _ in range(2)],
               "ps": [f"localhost:{free_port()}" for _ in range(2)]}
    spec = tf.train.ClusterSpec(cluster)
    threads = tf.compat.v1.ConfigProto(inter_op_parallelism_threads=4)  # in-process workers need their own threads
    servers = [tf.distribute.Server(spec, job_name=task_type, task_index=index, protocol="grpc", config=threads)
               for task_type in ("worker", "ps") for index in range(len(cluster[task_type]))]
    strategy = distribute.strategy_for(distribute.ClusterRole("chief", 0, cluster), min_shard_bytes=MIN_SHARD_BYTES)
    config = load_config(config_path, PS_OVERRIDES)
    data = bundle.prepare(config)
    result = train_retrieval(config, data, RunContext(pathlib.Path(tempfile.mkdtemp())), strategy=strategy)
    import tf_keras as keras

    layers = [layer for layer in result.model.submodules if isinstance(layer, keras.layers.Embedding)]
    tables = []
    for layer in layers:
        parts = list(getattr(layer.embeddings, "variables", [layer.embeddings]))
        tables.append({"layer": layer.name, "bytes": int(np.prod(layer.embeddings.shape)) * 4,
                       "shards": [{"device": part.device, "rows": int(part.shape[0])} for part in parts]})
    largest = max(layers, key=lambda layer: int(layer.embeddings.shape[0])).embeddings
    print(json.dumps({
        "strategy": type(strategy).__name__,
        "min_shard_bytes": MIN_SHARD_BYTES,
        "metrics": result.metrics,
        "tables": tables,
        "lookup_error": _lookup_error(largest),
        "servers": len(servers),
    }))


def _lookup_error(table: object) -> float:
    """max |embedding rows read through the sharded variable - the same rows of the concatenated shards|."""
    import tensorflow as tf

    whole = np.concatenate([shard.numpy() for shard in table.variables])  # type: ignore[attr-defined]
    rows = np.arange(0, whole.shape[0], 7)
    through = tf.nn.embedding_lookup(table, tf.constant(rows)).numpy()
    return float(np.abs(through - whole[rows]).max())


if __name__ == "__main__":
    main(sys.argv[1])
