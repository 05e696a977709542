"""Retrieval training input from TFRecord shards equals the in-memory training features."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import tensorflow as tf

from trainer.data.bundle import TrainingData
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest
from trainer.retrieval.records import retrieval_training_dataset
from trainer.retrieval.train import training_features_of

from .conftest import as_numpy, assert_same_features, concat_batches


def test_records_give_the_in_memory_training_features(tiny_prepared: Manifest, tiny_data: TrainingData) -> None:
    assert tiny_prepared.train_item_counts == Counter(tiny_data.train_examples["item_id"].tolist())
    streamed = as_numpy(concat_batches(list(retrieval_training_dataset(tiny_prepared, 128).as_numpy_iterator())))
    expected = training_features_of(tiny_data.train_examples, tiny_data.t_max, tiny_data.t_span)
    assert set(streamed) == set(expected)
    assert_same_features(streamed, expected)  # example_age and candidate_probability bit for bit


def test_each_worker_reads_its_share(tiny_prepared: Manifest) -> None:
    shares = [retrieval_training_dataset(tiny_prepared, 64, input_context=tf.distribute.InputContext(2, i, 2))
              for i in range(2)]
    rows = [sum(int(batch["item_id"].shape[0]) for batch in share) for share in shares]
    assert sum(rows) == tiny_prepared.examples("train") and min(rows) > 0


def test_a_manifest_without_item_counts_is_refused(tiny_prepared: Manifest) -> None:
    import dataclasses

    with pytest.raises(DataError, match="no training item counts"):
        retrieval_training_dataset(dataclasses.replace(tiny_prepared, train_item_counts={}), 8)
    assert np.isclose(sum(tiny_prepared.train_item_counts.values()), tiny_prepared.examples("train"))
