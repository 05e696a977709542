"""Retrieval training input: the same examples streamed from TFRecord shards or sliced in memory give the same
features, derived once."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from trainer.data.bundle import TrainingData
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.retrieval.inputs import InMemoryTrainingInput, ShardedTrainingInput

from .conftest import as_numpy, assert_same_features, concat_batches


def test_records_give_the_in_memory_training_features(tiny_prepared: Manifest, tiny_data: TrainingData) -> None:
    assert tiny_prepared.train_item_counts == Counter(tiny_data.train_examples["item_id"].tolist())
    def read(batches: tf.data.Dataset) -> dict[str, np.ndarray]:
        return as_numpy(concat_batches(list(batches.as_numpy_iterator())))

    streamed = read(ShardedTrainingInput(tiny_prepared).batches(128, seed=0, shuffle=False))
    in_memory = InMemoryTrainingInput(tiny_data.train_examples, tiny_data.t_max, tiny_data.t_span)
    expected = read(in_memory.batches(128, seed=0, shuffle=False))
    assert set(streamed) == set(expected) and "example_age" in expected and "candidate_probability" in expected
    assert_same_features(streamed, expected)  # the derived features bit for bit


def test_a_first_batch_is_the_first_rows_of_the_unshuffled_batches(tiny_prepared: Manifest,
                                                                   tiny_data: TrainingData) -> None:
    in_memory = InMemoryTrainingInput(tiny_data.train_examples, tiny_data.t_max, tiny_data.t_span)
    for train in (in_memory, ShardedTrainingInput(tiny_prepared)):
        first = as_numpy({name: values.numpy() for name, values in train.first_batch(5).items()})
        whole = as_numpy(next(train.batches(64, seed=0, shuffle=False).as_numpy_iterator()))
        assert set(first) == set(whole)
        assert_same_features(first, {name: values[:5] for name, values in whole.items()})


def test_each_worker_reads_its_share(tiny_prepared: Manifest) -> None:
    shares = [ShardedTrainingInput(tiny_prepared).batches(64, seed=0, input_context=tf.distribute.InputContext(2, i, 2))
              for i in range(2)]
    rows = [sum(int(batch["item_id"].shape[0]) for batch in share) for share in shares]
    assert sum(rows) == tiny_prepared.examples("train") and min(rows) > 0


def test_a_manifest_without_item_counts_is_refused(tiny_prepared: Manifest) -> None:
    import dataclasses

    with pytest.raises(DataError, match="no training item counts"):
        ShardedTrainingInput(dataclasses.replace(tiny_prepared, train_item_counts={})).batches(8, seed=0)
    assert np.isclose(sum(tiny_prepared.train_item_counts.values()), tiny_prepared.examples("train"))
