"""Training: negatives, weights, NeuMF against popularity, checkpoints and resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from recsys_common import contract
from trainer.optimizers import OPTIMIZERS, make_optimizer
from trainer.ranking.evaluate import evaluate_sampled
from trainer.ranking.loss import weighted_logistic_loss
from trainer.ranking.models import LABELS, WEIGHTS, build_model
from trainer.ranking.train import FitOptions, fit, row_recipe, train_model


def options(**changes) -> FitOptions:
    base = FitOptions(epochs=2, batch_size=256, num_negatives=4, optimizer="adam", learning_rate=0.005, patience=0,
                      seed=3)
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_optimizer_is_built_with_its_learning_rate(name: str) -> None:
    optimizer = make_optimizer(name, 0.25)
    assert type(optimizer).__name__.lower() == name and float(optimizer.learning_rate) == 0.25


def test_an_unknown_optimizer_is_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown optimizer 'rmsprop'; choose one of adam, adagrad, sgd"):
        make_optimizer("rmsprop", 0.1)


def test_training_rows_put_the_watch_first_and_resample_unseen_negatives(temporal):
    recipe = row_recipe(temporal, ("user_id", "candidate_ids"), options(num_negatives=3))
    first, second = recipe.rows(temporal.train, 0), recipe.rows(temporal.train, 1)
    labels, weights = first[LABELS], first[WEIGHTS]
    candidates = first[contract.CANDIDATE_IDS]
    assert candidates.shape == (len(temporal.train["item_id"]), 4)
    np.testing.assert_array_equal(candidates[:, 0], temporal.train["item_id"])
    np.testing.assert_array_equal(labels[:, 0], 1.0)
    np.testing.assert_array_equal(labels[:, 1:], 0.0)
    for user, row in zip(first[contract.USER_ID][:500], candidates[:500, 1:], strict=True):
        assert not set(row) & temporal.seen[user]
    assert (second[contract.CANDIDATE_IDS][:, 1:] != candidates[:, 1:]).mean() > 0.5
    watch_time = temporal.train["watch_time"]
    np.testing.assert_allclose(weights[:, 0], watch_time / np.nanmean(watch_time), rtol=1e-5)
    np.testing.assert_array_equal(weights[:, 1:], 1.0)


def test_neumf_beats_item_popularity_clearly(ncf, config):
    config = dataclasses.replace(config, ranking=dataclasses.replace(config.ranking, epochs=8))
    popularity = evaluate_sampled(train_model("itempop", ncf, config)[0], ncf.test)
    neumf = evaluate_sampled(train_model("neumf", ncf, config)[0], ncf.test)
    assert neumf["hr@10"] > popularity["hr@10"] + 0.1
    assert neumf["ndcg@10"] > popularity["ndcg@10"] + 0.05
    assert neumf["weighted_per_user_loss"] < popularity["weighted_per_user_loss"]


def test_checkpoints_resume_where_training_stopped(temporal, config, tmp_path):
    data = dataclasses.replace(temporal, validation=None)  # no early stopping: the weights are the last epoch's
    first = build_model("gmf", data.space, config.ranking)
    history = fit(first, data, options(epochs=2), checkpoint_dir=tmp_path)
    again = build_model("gmf", data.space, config.ranking)
    assert fit(again, data, options(epochs=2), checkpoint_dir=tmp_path) == history  # nothing left to train
    for expected, actual in zip(first.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)
    resumed = build_model("gmf", data.space, config.ranking)
    longer = fit(resumed, data, options(epochs=3), checkpoint_dir=tmp_path)
    assert longer["loss"][:2] == history["loss"] and len(longer["loss"]) == 3
    assert int(resumed.optimizer.iterations.numpy()) == 3 * -(-len(data.train["user_id"]) // 256)
    assert not np.allclose(resumed.get_weights()[0], first.get_weights()[0])
    # the third epoch continued from the second: one more epoch from scratch lands elsewhere
    scratch = build_model("gmf", data.space, config.ranking)
    fit(scratch, data, options(epochs=1), checkpoint_dir=tmp_path / "scratch")
    assert not np.allclose(resumed.get_weights()[0], scratch.get_weights()[0])


def test_without_resume_an_earlier_run_is_trained_again(temporal, config, tmp_path):
    data = dataclasses.replace(temporal, validation=None)
    fit(build_model("gmf", data.space, config.ranking), data, options(epochs=1), checkpoint_dir=tmp_path)
    fresh = build_model("gmf", data.space, config.ranking)
    assert len(fit(fresh, data, options(epochs=2, resume=False), checkpoint_dir=tmp_path)["loss"]) == 2
    assert int(fresh.optimizer.iterations.numpy()) == 2 * -(-len(data.train["user_id"]) // 256)


def test_a_refit_of_zero_epochs_keeps_the_starting_weights(temporal, config, tmp_path):
    """Model selection may keep the untrained weights (they validated best): the refit then trains 0 epochs."""
    data = dataclasses.replace(temporal, validation=None)
    model = build_model("gmf", data.space, config.ranking)
    model.create_weights()
    start = [weight.numpy() for weight in model.trainable_weights]
    assert fit(model, data, options(epochs=0), checkpoint_dir=tmp_path) == {}
    for expected, actual in zip(start, model.trainable_weights, strict=True):
        np.testing.assert_array_equal(actual.numpy(), expected)
    twin = build_model("gmf", data.space, config.ranking)
    twin.create_weights()
    for weight, value in zip(twin.trainable_weights, start, strict=True):
        weight.assign(value)
    assert evaluate_sampled(model, data.test) == pytest.approx(evaluate_sampled(twin, data.test))  # uncompiled, both


def test_one_replica_in_memory_trains_as_a_plain_loop_over_the_seeded_shuffle(temporal, config):
    """Each epoch's rows in the order of permutation(rng(seed, epoch)), one step of the weighted mean loss a batch."""
    data, fit_options = dataclasses.replace(temporal, validation=None), options(epochs=2)
    trained, reference = (build_model("mf", data.space, config.ranking) for _ in range(2))
    trained.create_weights()
    reference.create_weights()
    reference.set_weights(trained.get_weights())
    initial = [weight.numpy() for weight in trained.trainable_weights]
    fit(trained, data, fit_options)
    optimizer = make_optimizer(fit_options.optimizer, fit_options.learning_rate)

    @tf.function
    def step(inputs: dict[str, tf.Tensor], labels: tf.Tensor, weights: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = weighted_logistic_loss(labels, reference(inputs, training=True), weights)
        optimizer.apply_gradients(zip(tape.gradient(loss, reference.trainable_variables),
                                      reference.trainable_variables))

    recipe = row_recipe(data, reference.feature_keys, fit_options)
    for epoch in range(fit_options.epochs):
        inputs = recipe.rows(data.train, epoch)
        labels, weights = inputs.pop(LABELS), inputs.pop(WEIGHTS)
        order = np.random.default_rng([fit_options.seed, epoch]).permutation(len(labels))
        for start in range(0, len(order), fit_options.batch_size):
            rows = order[start:start + fit_options.batch_size]
            batch = {key: tf.constant(values[rows].astype(str) if values.dtype == object else values[rows])
                     for key, values in inputs.items()}
            step(batch, tf.constant(labels[rows]), tf.constant(weights[rows]))
    moved = [a.numpy() - b for a, b in zip(trained.trainable_weights, initial, strict=True)]
    assert max(np.abs(change).max() for change in moved) > 1e-3  # training moved them
    for expected, actual in zip(reference.trainable_weights, trained.trainable_weights, strict=True):
        np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-4, atol=1e-6)


def test_early_stopping_keeps_the_best_validation_epoch(temporal, config):
    model = build_model("mf", temporal.space, config.ranking)
    history = fit(model, temporal, options(epochs=4, learning_rate=0.05, patience=1))
    best = max(history["validation_ndcg@10"])
    assert evaluate_sampled(model, temporal.validation)["ndcg@10"] == pytest.approx(best, abs=1e-6)
