"""The TFRecord example store: record round trip, reading order, shuffling and per-worker sharding."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.example import example_pb2

from trainer.data.bundle import TrainingData
from trainer.data.schema import DataError
from trainer.data.tfrecord import Manifest, read_examples, serialize_examples

from .conftest import as_numpy, assert_same_features, concat_batches


@pytest.fixture(scope="module")
def prepared(tiny_prepared: Manifest) -> Manifest:
    return tiny_prepared  # train: 3168 examples in 7 files of 500


def test_a_record_holds_the_example_values(tiny_data: TrainingData) -> None:
    features = {name: values[:3] for name, values in tiny_data.train_examples.items()}
    record = example_pb2.Example.FromString(serialize_examples(features)[1]).features.feature
    assert [v.decode() for v in record["watch_history"].bytes_list.value] == list(features["watch_history"][1])
    assert record["request_time"].int64_list.value == [features["request_time"][1]]
    assert np.isnan(record["rating"].float_list.value[0])  # synthetic logs have no ratings: NaN survives
    assert record["watch_time"].float_list.value[0] == pytest.approx(features["watch_time"][1])


def test_serialize_rejects_inconsistent_features(tiny_data: TrainingData) -> None:
    features = dict(tiny_data.train_examples)
    with pytest.raises(DataError, match=r"missing feature\(s\) \['rating'\]"):
        serialize_examples({name: v for name, v in features.items() if name != "rating"})
    with pytest.raises(DataError, match="different numbers of rows"):
        serialize_examples({**features, "age": features["age"][:5]})


def test_shuffled_epochs_hold_every_example_once_in_new_orders(prepared: Manifest) -> None:
    dataset = prepared.read("train", 256, shuffle=True, seed=3, shuffle_buffer=300)
    epochs = [concat_batches(list(dataset.as_numpy_iterator())) for _ in range(2)]
    in_order = concat_batches(list(prepared.read("train", 256).as_numpy_iterator()))

    def keys(features: dict[str, np.ndarray]) -> list[tuple[bytes, int]]:
        return list(zip(features["user_id"].tolist(), features["request_time"].tolist()))

    assert sorted(keys(epochs[0])) == sorted(keys(epochs[1])) == sorted(keys(in_order))
    assert keys(epochs[0]) != keys(epochs[1]) != keys(in_order)


@pytest.mark.parametrize("pipelines, by_file", [(2, True), (3, True), (10, False)])
def test_each_input_pipeline_reads_a_disjoint_share(prepared: Manifest, tiny_data: TrainingData, pipelines: int,
                                                    by_file: bool) -> None:
    files = prepared.files("train")
    assert (len(files) >= pipelines) == by_file
    shares = []
    for pipeline in range(pipelines):
        context = tf.distribute.InputContext(pipelines, pipeline, pipelines)
        batches = list(prepared.read("train", 64, input_context=context).as_numpy_iterator())
        shares.append(as_numpy(concat_batches(batches)))
    sizes = [len(share["item_id"]) for share in shares]
    assert sum(sizes) == prepared.examples("train") and min(sizes) > 0
    if by_file:  # pipeline i reads files i, i + n, ...: it holds exactly those records, in order
        for pipeline, share in enumerate(shares):
            alone = read_examples(files[pipeline::pipelines], 64, prepared.history_length,
                                  prepared.search_history_length)
            assert_same_features(share, as_numpy(concat_batches(list(alone.as_numpy_iterator()))))
    else:  # every n-th record
        expected = tiny_data.train_examples
        for pipeline, share in enumerate(shares):
            assert_same_features(share, {name: values[pipeline::pipelines] for name, values in expected.items()})


def test_static_batches_and_repeat(prepared: Manifest) -> None:
    dataset = prepared.read("train", 1000, drop_remainder=True, repeat=True)
    assert dataset.element_spec["watch_history"].shape.as_list() == [1000, prepared.history_length]
    assert len(list(dataset.take(7))) == 7  # 3168 records, 3 full batches per pass: it repeats


def test_reader_errors_name_the_problem(tmp_path: pathlib.Path, prepared: Manifest) -> None:
    with pytest.raises(DataError, match="no files match"):
        read_examples(str(tmp_path / "*.tfrecord"), 8, 2, 2)
    with pytest.raises(DataError, match="not found"):
        read_examples([tmp_path / "absent.tfrecord"], 8, 2, 2)
    with pytest.raises(DataError, match="compression must be one of"):
        read_examples(prepared.files("train"), 8, 2, 2, compression="ZLIB2")
    with pytest.raises(DataError, match="batch_size and shuffle_buffer must be > 0"):
        prepared.read("train", 0)
