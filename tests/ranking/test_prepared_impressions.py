"""The ranker trains on impressions streamed from a preprocessed folder, as it does on impressions in memory."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from trainer import task
from trainer.config import Config, load_config
from trainer.data.bundle import prepare
from trainer.data.event_stream import FrameEventSource, FrameImpressionSource
from trainer.data.examples import ITEM_ID
from trainer.data.prepared import load_prepared
from trainer.data.tfrecord import IMPRESSIONS, SPLITS
from trainer.preprocess import preprocess
from trainer.ranking.protocol import temporal_protocol, training_impressions
from trainer.ranking.rows import StreamedExamples
from trainer.ranking.train import FitOptions, _training_rows, row_recipe, training_unit
from trainer.refit import whole_log

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
WORLD = {"synthetic.slate_size": 5, "synthetic.clickbait_fraction": 0.1, "synthetic.freshness_days": 2.0,
         "synthetic.num_channels": 8, "synthetic.num_languages": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    config = load_config(TINY, WORLD)
    dataset = prepare(config).dataset
    assert dataset.impressions is not None
    out = tmp_path_factory.mktemp("world") / "prepared"
    preprocess(FrameEventSource(dataset.events, "world", 700), dataset.users, dataset.items, config.data, out,
               shard_size=4000, impressions=FrameImpressionSource(dataset.impressions, "world", 900))
    return out


def _configs(folder: pathlib.Path, **overrides: object) -> tuple[Config, Config]:
    return (load_config(TINY, {**WORLD, **overrides}),
            load_config(TINY, {**WORLD, **overrides, "data.prepared_dir": str(folder)}))


def _sorted_rows(examples: dict[str, np.ndarray]) -> np.ndarray:
    keys = np.char.add(np.char.add(examples["user_id"].astype(str), "|"), examples[ITEM_ID].astype(str))
    keys = np.char.add(np.char.add(keys, "|"), examples["request_time"].astype(str))
    return np.sort(keys)


def test_the_impression_sample_is_the_training_impressions(folder: pathlib.Path) -> None:
    memory_config, shards_config = _configs(folder)
    in_memory, prepared = prepare(memory_config), load_prepared(shards_config)
    expected = training_impressions(in_memory, memory_config, before=in_memory.split.validation_start)
    sample = training_impressions(prepared, shards_config)
    assert expected is not None and sample is not None
    np.testing.assert_array_equal(_sorted_rows(sample), _sorted_rows(expected))
    assert prepared.available_features == in_memory.available_features


def test_a_capped_sample_still_streams_every_training_impression(folder: pathlib.Path) -> None:
    _, config = _configs(folder, **{"data.prepared_sample_examples": 300})
    prepared = load_prepared(config)
    assert prepared.shards is not None
    data = temporal_protocol(prepared, config)
    assert data.impressions is not None and len(data.impressions[ITEM_ID]) == 300
    options = FitOptions.from_config(config.ranking, config.seed)
    rows = _training_rows(data, row_recipe(data, ("user_id", "candidate_ids"), options), options,
                          tf.distribute.get_strategy())
    assert isinstance(rows.examples, StreamedExamples) and rows.examples.kind == IMPRESSIONS
    assert rows.examples.count == prepared.shards.examples("train", IMPRESSIONS) > 300
    batch = next(iter(rows.examples.read(0, 64, 1, tf.distribute.InputContext(), 1)))
    clicked = batch["clicked"].numpy()
    assert set(np.unique(clicked)) == {0, 1}
    assert (batch["watch_time"].numpy()[clicked == 0] == 0).all()
    assert training_unit(data) > 0


def test_the_refit_streams_every_impression_shard(folder: pathlib.Path) -> None:
    _, config = _configs(folder)
    whole = whole_log(config, load_prepared(config))
    assert whole.shards is not None and whole.impression_sample is not None
    manifest = json.loads((folder / "manifest.json").read_text())
    every = sum(manifest["impression_splits"][split]["examples"] for split in SPLITS)
    assert whole.shards.examples("train", IMPRESSIONS) == every
    assert len(whole.impression_sample[ITEM_ID]) == every  # the sample cap exceeds the log


def test_the_task_trains_the_ranker_on_the_streamed_impressions(folder: pathlib.Path, tmp_path: pathlib.Path) -> None:
    _, config = _configs(folder, **{"run_dir": str(tmp_path / "runs"), "ranking.compare": []})
    task.run_task(config, export=False)
    log = next((tmp_path / "runs").glob("*/train.log")).read_text()
    steps = re.search(r"ranking temporal/\w+ epoch 1: .*steps (\d+)", log)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert steps is not None
    assert int(steps.group(1)) == -(-manifest["impression_splits"]["train"]["examples"] // config.ranking.batch_size)
