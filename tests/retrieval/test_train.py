"""Training on planted synthetic data: recovery of the structure, logQ, early stopping, resume after a kill."""

from __future__ import annotations

import dataclasses
import json
import logging

import numpy as np
import pytest
from tensorflow.python.summary.summary_iterator import summary_iterator

from bench.ablation import run_ablations
from trainer.context import ModelContext
from trainer.retrieval.evaluate import evaluate_scores
from trainer.retrieval.features import CANDIDATE_PROBABILITY, EXAMPLE_AGE, FeatureSet
from trainer.retrieval.inputs import InMemoryTrainingInput
from trainer.retrieval.train import build_model, fit, temporal_eval_set, train_retrieval
from trainer.run import RunContext


class Killed(Exception):
    """Stands for the process being killed after an epoch's checkpoint."""


def test_planted_structure_is_recovered_far_above_popularity(trained, config, data):
    metrics = trained.metrics
    assert metrics["recall@10"] >= 1.8 * metrics["popularity_recall@10"]
    assert metrics["recall@50"] >= metrics["popularity_recall@50"] + 0.15
    # The planted model's own ranking is the ceiling; a good generator gets well over half of it.
    truth = data.dataset.ground_truth
    columns = np.array([list(truth.item_ids).index(i) for i in data.catalog.item_ids])
    ceiling = evaluate_scores(lambda batch: truth.scores(batch["user_id"])[:, columns],
                              temporal_eval_set(config, data, "test"), [10])
    assert metrics["recall@10"] >= 0.5 * ceiling["recall@10"]


def test_metrics_and_summaries_land_in_the_run_folder(small_config, data, tmp_path):
    run = RunContext(tmp_path)
    result = train_retrieval(small_config(**{"retrieval.epochs": 2}), data, run)
    recorded = json.loads((tmp_path / "metrics.json").read_text())["retrieval"]
    assert recorded["recall@10"] == pytest.approx(result.metrics["recall@10"])
    assert recorded["history"]["val_recall"] == pytest.approx(result.history["val_recall"])
    # Keras' TensorBoard callback writes the val_ metrics to validation/ without the prefix, by 0-based epoch.
    events = (run.tensorboard_dir("retrieval") / "validation").iterdir()
    steps = sorted(event.step for path in events for event in summary_iterator(str(path))
                   if any(v.tag == "epoch_recall" for v in event.summary.value))
    assert steps == [0, 1]


def test_the_derived_features_are_the_item_frequency_and_the_clipped_age():
    examples = {"item_id": np.array(["a", "b", "a", "c", "a", "b"], dtype=object),
                "request_time": np.array([100, 90, 80, 60, 120, 40], dtype=np.int64),
                "watch_time": np.ones(6, np.float32)}
    (batch,) = InMemoryTrainingInput(examples, t_max=100, t_span=50).batches(6, seed=0, shuffle=False)
    assert "watch_time" not in batch
    np.testing.assert_allclose(batch[CANDIDATE_PROBABILITY].numpy(), [3 / 6, 2 / 6, 3 / 6, 1 / 6, 3 / 6, 2 / 6])
    np.testing.assert_allclose(batch[EXAMPLE_AGE].numpy(), [0.0, 0.2, 0.4, 0.8, 0.0, 1.0])  # (100 - t) / 50 in [0, 1]


def test_the_epoch_loss_is_the_mean_loss_per_example(small_config, data):
    """Not the last batch's summed loss (what Keras reports for a TFRS model): with frozen weights, the
    epoch loss over one batch holding every example equals the task loss of that batch / its size."""
    config = small_config(**{"retrieval.optimizer": "sgd", "retrieval.learning_rate": 1e-12,
                             "retrieval.batch_size": 400, "retrieval.epochs": 1})
    model = build_model(config.retrieval, FeatureSet.resolve(config.retrieval.features, data.available_features),
                        ModelContext.build(data.vocab, data.catalog, data.t_max, data.t_span))
    train = InMemoryTrainingInput({name: values[:400] for name, values in data.train_examples.items()}, data.t_max,
                                  data.t_span)
    (batch,) = list(train.batches(400, seed=0, shuffle=False))
    expected = float(model.compute_loss(batch)) / 400
    history = fit(model, config.retrieval, train, None, config.seed, None, None, logging.getLogger("test"))
    assert history["loss"] == [pytest.approx(expected, rel=1e-4)]


def test_a_killed_run_resumes_after_its_last_epoch(small_config, data, tmp_path):
    config = small_config(**{"retrieval.epochs": 2, "retrieval.early_stopping_patience": 0})
    records: dict[int, dict[str, float]] = {}

    def kill_after_first(epoch: int, record: dict[str, float]) -> None:
        records[epoch] = record
        if epoch == 1:
            raise Killed

    with pytest.raises(Killed):
        train_retrieval(config, data, RunContext(tmp_path), epoch_callback=kill_after_first)
    resumed = train_retrieval(config, data, RunContext(tmp_path), epoch_callback=kill_after_first)
    assert sorted(records) == [1, 2]
    assert resumed.metrics["epochs_trained"] == 2
    assert resumed.history["val_recall"] == [records[epoch]["val_recall"] for epoch in (1, 2)]
    # The optimiser state came back too: its step counter continues from the killed run's epoch.
    steps_per_epoch = int(np.ceil(len(data.train_examples["item_id"]) / config.retrieval.batch_size))
    assert int(resumed.model.optimizer.iterations.numpy()) == 2 * steps_per_epoch


def test_without_validation_users_all_epochs_run_unvalidated(small_config, data, tmp_path):
    empty_validation = dataclasses.replace(data.split, validation=data.split.validation[:0])
    no_validation = dataclasses.replace(data, split=empty_validation)
    config = small_config(**{"retrieval.epochs": 2, "retrieval.early_stopping_patience": 1})
    result = train_retrieval(config, no_validation, RunContext(tmp_path))
    assert result.metrics["epochs_trained"] == 2 and set(result.history) == {"loss", "steps", "seconds"}
    assert result.metrics["recall@50"] > result.metrics["popularity_recall@50"]


def test_an_unknown_ablation_is_refused_before_any_training(config, data, tmp_path):
    with pytest.raises(ValueError, match=r"unknown ablation\(s\) \['no_such'\]"):
        run_ablations(config, data, RunContext(tmp_path), names=["id_only", "no_such"])
    assert not (tmp_path / "retrieval_ablations.md").exists()
