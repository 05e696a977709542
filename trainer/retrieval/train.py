"""Training the candidate generator: in-batch softmax with logQ correction, validation and early stopping.

One Keras `fit` with the callbacks of `trainer.fitting`: every epoch ends with full-corpus
validation on the temporal split (requests built from the training events, validation-period
items as answers), early stopping on recall@early_stopping_k and a backup of model and
optimiser. A run that is killed and started again with the same run folder resumes after its
last finished epoch; at the end the best epoch's weights are restored.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf
import tf_keras as keras

from trainer import fitting, optimizers
from trainer.config import Config, RetrievalConfig
from trainer.context import ModelContext
from trainer.data.bundle import TrainingData
from trainer.retrieval.evaluate import (
    EvalSet,
    build_eval_set,
    evaluate_model,
    evaluate_scores,
    popularity_from_counts,
    popularity_scorer,
)
from trainer.retrieval.features import FeatureSet, dropped_features
from trainer.retrieval.inputs import InMemoryTrainingInput, ShardedTrainingInput, TrainingInput
from trainer.retrieval.model import RetrievalModel, embed_items
from trainer.retrieval.records import eval_set_from_examples, items_per_user
from trainer.run import RunContext

STAGE = "retrieval"
REFIT_STAGE = "retrieval_refit"
VALIDATION_PREFIX = "val_"
EpochCallback = Callable[[int, dict[str, float]], None]
Validator = Callable[[RetrievalModel], dict[str, float]]


@dataclasses.dataclass
class RetrievalResult:
    """A trained candidate generator.

    Attributes:
        model: the two towers (best validation epoch).
        metrics: test-period metrics (recall@K, ndcg@K, popularity_recall@K, ...) and training facts.
        history: per-epoch loss and validation metrics.
        item_embeddings: [M, d] candidate embeddings aligned with `item_ids`.
        item_ids: [M] the catalogue (data.catalog.item_ids).
        features: the inputs the towers use.
        config: the retrieval config it was trained with.
    """

    model: RetrievalModel
    metrics: dict[str, float]
    history: dict[str, list[float]]
    item_embeddings: np.ndarray
    item_ids: np.ndarray
    features: FeatureSet
    config: RetrievalConfig


def train_retrieval(config: Config, data: TrainingData, run: RunContext,
                    epoch_callback: EpochCallback | None = None,
                    strategy: tf.distribute.Strategy | None = None) -> RetrievalResult:
    """Trains, validates and tests the candidate generator; records metrics in the run folder.

    Args:
        config: the run config (`config.retrieval` above all).
        data: the prepared data.
        run: the run folder (metrics, TensorBoard, checkpoints).
        epoch_callback: called after each finished (and checkpointed) epoch with (epoch, its record).
        strategy: the tf.distribute strategy the model is built under (`trainer.distribute`); None = the default.
    """
    retrieval = config.retrieval
    log = run.log
    dropped = dropped_features(retrieval.features, data.available_features)
    if dropped:
        log.info("retrieval: the data has no columns for features %s; they are left out", dropped)
    result = fit_and_evaluate(config, data, run.checkpoint_dir(STAGE), run.tensorboard_dir(STAGE), log,
                              epoch_callback, strategy)
    run.record_metrics(STAGE, {**result.metrics, "features": result.features.enabled(), "dropped_features": dropped,
                               "history": result.history})
    return result


def fit_and_evaluate(config: Config, data: TrainingData, checkpoint_dir: pathlib.Path | None,
                     tensorboard_dir: pathlib.Path | None, log: logging.Logger,
                     epoch_callback: EpochCallback | None = None,
                     strategy: tf.distribute.Strategy | None = None) -> RetrievalResult:
    """Builds the model for `config.retrieval.features`, trains it on the temporal split and tests it.

    Only the model is built under `strategy` (Keras fit then distributes the batches); the training
    state around it (epoch, history) stays local to each worker.
    """
    retrieval = config.retrieval
    keras.utils.set_random_seed(config.seed)
    feature_set = FeatureSet.resolve(retrieval.features, data.available_features)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(retrieval, feature_set, ModelContext.of_run(data))
    validation = temporal_eval_set(config, data, "validation")
    ks = sorted(set(retrieval.eval_ks) | {retrieval.early_stopping_k})
    validate: Validator | None = None
    if len(validation):
        validate = functools.partial(evaluate_model, item_ids=data.catalog.item_ids, eval_set=validation, ks=ks)
    else:
        log.warning("retrieval: no user has unseen items in the validation period; training all %d epochs "
                    "without validation or early stopping", retrieval.epochs)
    train = training_input(data)
    history = fit(model, retrieval, train, validate, config.seed, checkpoint_dir,
                  tensorboard_dir, log, epoch_callback)
    item_embeddings = embed_items(model.candidate_tower, data.catalog.item_ids)
    test = temporal_eval_set(config, data, "test")
    ks = retrieval.eval_ks
    scores = evaluate_model(model, data.catalog.item_ids, test, ks, item_embeddings)
    baseline = evaluate_scores(_popularity(data), test, ks)
    metrics: dict[str, float] = {**scores, **{f"popularity_{name}": value for name, value in baseline.items()}}
    metrics.update(epochs_trained=len(history["loss"]), test_users=len(test))  # counts stay ints in the report
    if history.get("val_recall"):
        metrics["best_epoch"] = int(np.argmax(history["val_recall"])) + 1
    log.info("retrieval test: %s", {name: round(value, 4) for name, value in metrics.items()})
    return RetrievalResult(model, metrics, history, item_embeddings, data.catalog.item_ids, feature_set, retrieval)


def selected_epochs(result: RetrievalResult) -> int:
    """The epoch count that model selection chose: the best validation epoch, else every epoch trained."""
    return int(result.metrics.get("best_epoch", result.metrics["epochs_trained"]))


def refit_retrieval(config: Config, data: TrainingData, run: RunContext, selected: RetrievalResult,
                    strategy: tf.distribute.Strategy | None = None) -> RetrievalResult:
    """Trains a fresh candidate generator on `data` (the whole log) for the epochs `selected` was chosen at.

    Nothing is held out, so there is no validation and no test: the result keeps `selected`'s held-out
    metrics. Checkpoints go to the run folder's `retrieval_refit` stage, so a killed refit resumes.

    Args:
        config: the run config (`config.retrieval`, as selected).
        data: the whole log (`trainer.refit.whole_log`).
        run: the run folder.
        selected: the model trained and evaluated on the temporal split.
        strategy: the tf.distribute strategy the model is built under; None = the default.
    """
    retrieval = dataclasses.replace(config.retrieval, epochs=selected_epochs(selected))
    keras.utils.set_random_seed(config.seed)
    feature_set = FeatureSet.resolve(retrieval.features, data.available_features)
    with (strategy or tf.distribute.get_strategy()).scope():
        model = build_model(retrieval, feature_set, ModelContext.of_run(data))
    train = training_input(data)
    history = fit(model, retrieval, train, None, config.seed, run.checkpoint_dir(REFIT_STAGE),
                  run.tensorboard_dir(REFIT_STAGE), run.log, label="retrieval refit")
    item_embeddings = embed_items(model.candidate_tower, data.catalog.item_ids)
    return RetrievalResult(model, dict(selected.metrics), history, item_embeddings, data.catalog.item_ids,
                           feature_set, retrieval)


def build_model(retrieval: RetrievalConfig, features: FeatureSet, context: ModelContext) -> RetrievalModel:
    """The two-tower model over the context's vocabularies and item catalogue (item ages measured from t_max).

    The query tower reads only the `context.history_length` most recent watches of a request.
    """
    return RetrievalModel(retrieval, context, features)


def training_input(data: TrainingData) -> TrainingInput:
    """The training examples of the run: streamed from its shards when it has them, else from memory."""
    if data.shards is not None:
        return ShardedTrainingInput(data.shards)
    return InMemoryTrainingInput(data.train_examples, data.t_max, data.t_span)


def temporal_eval_set(config: Config, data: TrainingData, period: str) -> EvalSet:
    """Requests for the validation period (history = train) or the test period (history = train + validation)."""
    split = data.split
    if period not in ("validation", "test"):
        raise ValueError(f"unknown evaluation period {period!r}; use 'validation' or 'test'")
    validation = period == "validation"
    start = split.validation_start if validation else split.test_start
    if data.shards is not None:  # the training split is on disk: requests come from the period's own examples
        earlier = functools.partial(items_per_user, data.shards, ("train",) if validation else ("train", "validation"))
        return eval_set_from_examples(data.validation_examples if validation else data.test_examples,
                                      data.catalog.item_ids, start, config.retrieval.eval_max_users, config.seed,
                                      earlier)
    if validation:
        history, targets = split.train, split.validation
    else:
        history, targets = pd.concat([split.train, split.validation], ignore_index=True), split.test
    return build_eval_set(history, targets, data.dataset.users, data.catalog.item_ids, start, data.history_length,
                          data.search_history_length, config.retrieval.eval_max_users, config.seed)


def _popularity(data: TrainingData) -> Callable[[dict[str, np.ndarray]], np.ndarray]:
    if data.shards is not None:
        return popularity_from_counts(data.shards.train_item_counts, data.catalog.item_ids)
    return popularity_scorer(data.split.train, data.catalog.item_ids)


def fit(model: RetrievalModel, retrieval: RetrievalConfig, train: TrainingInput,
        validate: Validator | None, seed: int, checkpoint_dir: pathlib.Path | None,
        tensorboard_dir: pathlib.Path | None, log: logging.Logger,
        epoch_callback: EpochCallback | None = None, label: str = STAGE) -> dict[str, list[float]]:
    """Trains `model` for up to `retrieval.epochs` epochs, resuming from `checkpoint_dir` if it holds a run.

    Args:
        model: the model (its weights end as the best validation epoch's).
        retrieval: epochs, batch size, optimiser, early stopping.
        train: the training examples (`training_input`).
        validate: the per-epoch validation (model -> metrics with recall@early_stopping_k); None trains all
            epochs without validation.
        seed: the shuffle seed.
        checkpoint_dir: where to checkpoint and resume; None keeps everything in memory.
        tensorboard_dir: where to write summaries; None writes none.
        log: the run log.
        epoch_callback: called with (epoch, record) after each finished epoch.
        label: names the training in the log and the progress bar ("retrieval", "retrieval refit").

    Returns:
        The per-epoch history: loss (the mean per training example), val_recall (recall@early_stopping_k)
        and val_<metric>.
    """
    with model.distribute_strategy.scope():
        model.create_weights(train.first_batch(retrieval.batch_size))
        model.compile(optimizer=optimizers.make_optimizer(retrieval.optimizer, retrieval.learning_rate))
    start, epochs = fitting.epochs_to_train(checkpoint_dir, retrieval.epochs)
    if start:
        log.info("%s: resuming after epoch %d from %s", label, start, checkpoint_dir)
    steps = -(-len(train) // retrieval.batch_size)
    dataset, fit_options = _fit_input(model, train, retrieval.batch_size, seed + start, steps)
    history = fitting.RunHistory(VALIDATION_PREFIX, checkpoint_dir)
    validation = selection = None
    if validate is not None:
        recall = f"recall@{retrieval.early_stopping_k}"
        validation = fitting.ValidationMetrics(lambda trained: _with_recall(validate(trained), recall),
                                               VALIDATION_PREFIX)
        selection = fitting.SelectBestEpoch(VALIDATION_PREFIX + "recall", retrieval.early_stopping_patience,
                                            checkpoint_dir)
    extra = [] if epoch_callback is None else [keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch_callback(epoch + 1, history.last()))]
    callbacks = fitting.training_callbacks(history, checkpoint_dir, tensorboard_dir,
                                           fitting.Report(label, steps, log), validation, selection, extra)
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=callbacks, **fit_options)
    return history.history


def _with_recall(metrics: dict[str, float], recall: str) -> dict[str, float]:
    """The validation metrics plus "recall", the one early stopping watches."""
    return {**metrics, "recall": metrics[recall]}


def _fit_input(model: RetrievalModel, train: TrainingInput, batch_size: int,
               seed: int, steps: int) -> tuple[Any, dict[str, Any]]:
    """What `model.fit` gets: the shuffled batches, or, under parameter servers, a per-worker dataset function.

    With parameter servers each worker pulls batches from its own endless iterator, so the data is
    sharded by worker (every n-th batch of the same shuffled order) and repeated, and an epoch is
    `steps` steps (`trainer.distribute`).
    """
    if not isinstance(model.distribute_strategy, tf.distribute.experimental.ParameterServerStrategy):
        return train.batches(batch_size, seed), {}

    def per_worker(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batches = train.batches(batch_size, seed)
        return batches.shard(context.num_input_pipelines, context.input_pipeline_id).repeat()

    return keras.utils.experimental.DatasetCreator(per_worker), {"steps_per_epoch": steps}
