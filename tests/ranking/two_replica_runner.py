"""Run in a fresh process by test_distributed.py: the ranking loop on two in-process replicas.

    python two_replica_runner.py OUTPUT.json

The process splits its CPU into two logical devices (only possible before TensorFlow starts), so a
MirroredStrategy over them has two replicas, like two workers of MultiWorkerMirroredStrategy. It
writes which examples each replica took in each step of `InMemoryExamples`, the batches of streamed
`TrainingRows`, and the weights of one "mf" model after `fit` took one SGD step on a full batch, trained
once on the two replicas and once on the default strategy from the same initial weights.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

ROWS, BATCH, SEED = 20, 8, 3
TINY_CONFIG = pathlib.Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"


def replica_rows(strategy: tf.distribute.Strategy) -> list[list[list[int]]]:
    """[step][replica] -> the numbers of the in-memory examples the replica read in epoch 0."""
    from trainer.ranking.rows import InMemoryExamples

    examples = InMemoryExamples({"user_id": np.array(["u"] * ROWS, dtype=object), "row": np.arange(ROWS)}, ["row"],
                                SEED)
    steps = ROWS // BATCH
    batches = strategy.distribute_datasets_from_function(
        lambda context: examples.read(0, BATCH, steps, context, strategy.num_replicas_in_sync))
    taken = [[t.numpy().tolist() for t in strategy.experimental_local_results(batch["row"])] for batch in batches]
    assert len(taken) == steps
    return taken


def one_step_weights(strategy: tf.distribute.Strategy, initial: list[np.ndarray] | None) -> list[np.ndarray]:
    """The weights of an "mf" model after `fit` took one SGD step on BATCH training rows."""
    import dataclasses

    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.ranking.models import build_model
    from trainer.ranking.protocol import temporal_protocol
    from trainer.ranking.train import FitOptions, fit

    config = load_config(TINY_CONFIG)
    data = temporal_protocol(prepare(config), config)
    data = dataclasses.replace(data, train={key: values[:BATCH] for key, values in data.train.items()},
                               validation=None)
    options = FitOptions(epochs=1, batch_size=BATCH, num_negatives=2, optimizer="sgd", learning_rate=0.5,
                         patience=0, seed=SEED)
    with strategy.scope():
        model = build_model("mf", data.space, config.ranking)
        model.create_weights()
        for weight, value in zip(model.trainable_weights, initial or [], strict=False):
            weight.assign(value)
    fit(model, data, options, strategy=strategy)
    assert int(model.optimizer.iterations.numpy()) == 1
    return [weight.numpy() for weight in model.trainable_weights]


def streamed_batches(strategy: tf.distribute.Strategy) -> dict[str, object]:
    """Steps and per-replica batch shapes of one epoch streamed from preprocessed shards of the tiny data."""
    import tempfile

    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.data.event_stream import FrameEventSource
    from trainer.preprocess import preprocess
    from trainer.ranking.rows import NegativeDraws, RowRecipe, StreamedExamples, TrainingRows

    config = load_config(TINY_CONFIG)
    dataset = prepare(config).dataset
    with tempfile.TemporaryDirectory() as folder:
        manifest = preprocess(FrameEventSource(dataset.events, "tiny", 1000), dataset.users, dataset.items,
                              config.data, pathlib.Path(folder) / "out", shard_size=500)
        recipe = RowRecipe(NegativeDraws(list(manifest.vocab.item_ids), {}, 2, SEED), ("user_id", "candidate_ids"),
                           1.0)
        rows = TrainingRows(StreamedExamples(manifest, SEED), recipe, strategy, BATCH * 16)
        batches = strategy.distribute_datasets_from_function(rows.dataset(0, 1))
        shapes = [[list(t.shape) for t in strategy.experimental_local_results(batch["candidate_ids"])]
                  for batch in batches]
        return {"examples": manifest.examples("train"), "steps": rows.steps, "shapes": shapes}


def main(output: str) -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    two = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    single = tf.distribute.get_strategy()
    initial = one_step_weights(single, None)  # any weights will do as the common start
    on_one, on_two = one_step_weights(single, initial), one_step_weights(two, initial)
    json.dump({"replicas": two.num_replicas_in_sync, "rows": replica_rows(two), "streamed": streamed_batches(two),
               "moved": max(float(np.abs(a - b).max()) for a, b in zip(on_one, initial)),
               "difference": max(float(np.abs(a - b).max()) for a, b in zip(on_one, on_two))}, open(output, "w"))


if __name__ == "__main__":
    main(sys.argv[1])
