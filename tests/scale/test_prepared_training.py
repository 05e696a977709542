"""`python -m trainer.task --data.prepared_dir DIR`: both models train from the TFRecord shards, evaluation reads
the validation/test shards, ranking takes its feature statistics from a capped in-memory sample, and the export
serves."""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from recsys_common import contract
from trainer.config import Config, ConfigError, load_config
from trainer.data.bundle import TrainingData
from trainer.data.prepared import load_prepared
from trainer.data.tfrecord import Manifest
from trainer.retrieval.evaluate import build_eval_set
from trainer.retrieval.export import default_request
from trainer.retrieval.records import eval_set_from_examples, items_per_user
from trainer.run import LOGGER_NAME
from trainer.task import TaskResult, run_task

from .conftest import TINY_CONFIG

SAMPLE_CAP = 1000

# One epoch of the tiny data leaves the test AUC anywhere between 0.44 and 0.80 by seed; three settle it.
RANKING_EPOCHS = 3

def prepared_config(config: Config, manifest: Manifest, folder: pathlib.Path) -> Config:
    data = dataclasses.replace(config.data, prepared_dir=str(manifest.directory), prepared_sample_examples=SAMPLE_CAP)
    export = dataclasses.replace(config.export, output_dir=str(folder / "saved_models"))
    ranking = dataclasses.replace(config.ranking, epochs=RANKING_EPOCHS)
    return dataclasses.replace(config, data=data, export=export, ranking=ranking, run_dir=str(folder / "runs"))


@pytest.fixture(scope="module")
def shard_run(tiny_config: Config, tiny_prepared: Manifest, tmp_path_factory: pytest.TempPathFactory,
              ) -> tuple[TaskResult, list[str]]:
    folder = tmp_path_factory.mktemp("prepared_task")
    messages: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: messages.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger(LOGGER_NAME).addHandler(handler)
    try:
        result = run_task(prepared_config(tiny_config, tiny_prepared, folder), run_name="shards")
    finally:
        logging.getLogger(LOGGER_NAME).removeHandler(handler)
    return result, messages


def test_retrieval_trains_from_the_shards_and_beats_popularity(shard_run: tuple[TaskResult, list[str]],
                                                                tiny_prepared: Manifest) -> None:
    result, messages = shard_run
    retrieval = result.metrics["retrieval"]
    assert len(retrieval["history"]["loss"]) == 2
    assert retrieval["history"]["loss"][1] < retrieval["history"]["loss"][0]
    assert retrieval["test_users"] > 50
    assert retrieval["recall@50"] > retrieval["popularity_recall@50"]
    train = tiny_prepared.examples("train")
    assert train > SAMPLE_CAP
    assert any(f"streaming {train} training examples" in m and f"{SAMPLE_CAP} of them sampled" in m
               for m in messages), "the ranking sample cap must be logged"


def test_ranking_trains_on_every_streamed_example_not_on_the_sample(shard_run: tuple[TaskResult, list[str]],
                                                                    tiny_prepared: Manifest,
                                                                    tiny_config: Config) -> None:
    batch = tiny_config.ranking.batch_size
    streamed_steps = -(-tiny_prepared.examples("train") // batch)
    assert streamed_steps > -(-SAMPLE_CAP // batch)
    epochs = [m for m in shard_run[1] if m.startswith(f"ranking temporal/{tiny_config.ranking.model} epoch")]
    assert len(epochs) == RANKING_EPOCHS
    assert all(f"steps {streamed_steps:.4f}" in m for m in epochs), epochs
    assert shard_run[0].metrics["ranking"]["test_auc"] > 0.6


def test_metrics_are_close_to_the_in_memory_run(shard_run: tuple[TaskResult, list[str]], tiny_retrieval) -> None:
    shards, memory = shard_run[0].metrics["retrieval"], tiny_retrieval.metrics
    assert shards["test_users"] == memory["test_users"]
    for name in ("popularity_recall@10", "popularity_recall@50", "popularity_ndcg@50"):  # the same protocol
        assert shards[name] == pytest.approx(memory[name], abs=1e-9), name
    for name in ("recall@10", "recall@50", "ndcg@50"):  # the same data and seed, another batch order
        assert shards[name] == pytest.approx(memory[name], abs=0.08), name


def test_the_export_serves_the_trained_users(shard_run: tuple[TaskResult, list[str]],
                                             tiny_prepared: Manifest) -> None:
    from serving.session_model import SessionModel

    request = default_request(2)
    request[contract.USER_ID] = np.array(["u001", "nobody"], dtype=object)
    with SessionModel.load(shard_run[0].exports[contract.RETRIEVAL]) as model:
        items = model.run(contract.SIGNATURE_NAME, request)[contract.ITEM_IDS]
    catalog = set(tiny_prepared.items()["item_id"])
    top = [item.decode() for item in items[0]]
    assert len(top) == 50 == len(set(top)) and set(top) <= catalog
    assert top != [item.decode() for item in items[1]], "a trained user gets other items than an unknown one"
    assert (shard_run[0].exports[contract.RANKING] / "saved_model.pb").is_file()


def test_the_refit_streams_every_shard_and_the_export_says_so(shard_run: tuple[TaskResult, list[str]],
                                                              tiny_prepared: Manifest, tiny_data: TrainingData,
                                                              tiny_config: Config) -> None:
    """export.refit (on by default): both stages retrain on the train, validation and test shards."""
    from trainer.export import layout

    result, messages = shard_run
    split = tiny_data.split
    events = pd.concat([split.train, split.validation, split.test])
    total = sum(tiny_prepared.examples(name) for name in ("train", "validation", "test"))
    assert total == len(events)
    refit = result.metrics["refit"]
    assert refit["refit"] is True and refit["events"] == total
    assert refit["last_event_time"] == int(events["timestamp"].max())
    assert refit["items"] == events["item_id"].nunique() > len(tiny_prepared.vocab.item_ids)
    assert refit["users"] == events["user_id"].nunique()
    steps = -(-total // tiny_config.ranking.batch_size)
    epochs = [m for m in messages if m.startswith(f"ranking refit/{tiny_config.ranking.model} epoch")]
    assert len(epochs) == refit["ranking_epochs"][tiny_config.ranking.model] >= 1
    assert all(f"steps {steps:.4f}" in m for m in epochs), epochs
    assert len([m for m in messages if m.startswith("retrieval refit epoch")]) == refit["retrieval_epochs"]
    for name in (contract.RETRIEVAL, contract.RANKING):
        trained_on = layout.read_metadata(result.exports[name])["trained_on"]
        assert trained_on["events"] == total and trained_on["periods"] == ["train", "validation", "test"], name
    ranking = layout.read_metadata(result.exports[contract.RANKING])["data"]
    assert ranking["num_items"] == refit["items"]  # items first seen after the training period are known


def test_loaded_data_matches_the_manifest_and_caps_the_sample(tiny_config: Config, tiny_prepared: Manifest,
                                                              tiny_data: TrainingData, tmp_path: pathlib.Path) -> None:
    data = load_prepared(prepared_config(tiny_config, tiny_prepared, tmp_path))
    assert data.shards is not None and len(data.train_examples["item_id"]) == SAMPLE_CAP
    assert data.t_max == tiny_data.t_max and list(data.catalog.item_ids) == list(tiny_data.catalog.item_ids)
    assert len(data.split.test) == len(tiny_data.split.test)
    np.testing.assert_array_equal(np.sort(data.split.validation["item_id"].to_numpy(dtype=str)),
                                  np.sort(tiny_data.split.validation["item_id"].to_numpy(dtype=str)))


@pytest.mark.parametrize("with_earlier_items", [True, False])
def test_eval_set_from_examples_agrees_with_the_event_log_protocol(tiny_data: TrainingData,
                                                                   with_earlier_items: bool) -> None:
    split, ids = tiny_data.split, tiny_data.catalog.item_ids
    from_log = build_eval_set(split.train, split.validation, tiny_data.dataset.users, ids, split.validation_start,
                              10, 5, 10_000, 0)
    by_user = split.train.groupby("user_id")["item_id"].agg(set).to_dict()
    earlier = (lambda users: {user: by_user.get(user, set()) for user in users}) if with_earlier_items else None
    from_examples = eval_set_from_examples(tiny_data.validation_examples, ids, split.validation_start, 10_000, 0,
                                           earlier)
    assert from_examples.num_items == from_log.num_items == len(ids)
    log_rows = {user: row for row, user in enumerate(from_log.queries[contract.USER_ID])}
    mine_rows = {user: row for row, user in enumerate(from_examples.queries[contract.USER_ID])}
    assert set(log_rows) <= set(mine_rows)
    assert (set(log_rows) == set(mine_rows)) or not with_earlier_items
    for user, theirs in log_rows.items():
        mine = mine_rows[user]
        for name in (contract.WATCH_HISTORY, contract.SEARCH_HISTORY, contract.REQUEST_TIME, contract.AGE):
            np.testing.assert_array_equal(from_examples.queries[name][mine], from_log.queries[name][theirs])
        if with_earlier_items:
            assert set(from_examples.relevant[mine]) == set(from_log.relevant[theirs])
        else:  # only the last H items are excluded, so the answers are a superset
            assert set(from_log.relevant[theirs]) <= set(from_examples.relevant[mine])
    if with_earlier_items:
        assert len(from_examples.seen_items) == len(from_log.seen_items)


def test_items_per_user_reads_the_earlier_shards(tiny_prepared: Manifest, tiny_data: TrainingData) -> None:
    users = ["u001", "u050", "nobody"]
    events = tiny_data.split.train[tiny_data.split.train["user_id"].isin(users)]
    expected = events.groupby("user_id")["item_id"].agg(set).to_dict()
    assert items_per_user(tiny_prepared, ("train",), users) == expected


@pytest.mark.parametrize("make_dir", [lambda tmp: tmp / "missing", lambda tmp: tmp])
def test_a_folder_without_manifest_is_refused_naming_the_key(make_dir, tmp_path: pathlib.Path) -> None:
    with pytest.raises(ConfigError, match=r"data\.prepared_dir: .* holds no manifest\.json"):
        load_config(TINY_CONFIG, {"data.prepared_dir": str(make_dir(tmp_path))})


def test_the_command_line_refuses_a_folder_without_manifest(tmp_path: pathlib.Path) -> None:
    result = subprocess.run([sys.executable, "-m", "trainer.task", "--config", str(TINY_CONFIG),
                             "--data.prepared_dir", str(tmp_path)], capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2
    assert "data.prepared_dir" in result.stderr and "Traceback" not in result.stderr
