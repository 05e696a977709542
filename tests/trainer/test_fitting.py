"""The training callbacks both stages share: early stopping that keeps the best (or the starting) weights, a history
and a selection that survive a kill, and the backup's own epoch count."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from trainer import fitting

STEPS = 4


class Killed(Exception):
    """Stands for the process being killed after an epoch's backup."""


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(3,))])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


def batches() -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype(np.float32)
    return tf.data.Dataset.from_tensor_slices((x, x.sum(axis=1, keepdims=True))).batch(8)


class Scripted:
    """A validation whose metric is the next value of `scores` at each call (the start's first, if scored)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores, self.calls = list(scores), 0

    def __call__(self, model: keras.Model) -> dict[str, float]:
        self.calls += 1
        return {"score": self.scores.pop(0)}


class WeightsByEpoch(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.weights: dict[int, list[np.ndarray]] = {}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.weights[epoch + 1] = self.model.get_weights()


def train(model: keras.Model, scores: list[float], epochs: int, patience: int, directory: pathlib.Path | None = None,
          score_start: bool = False, extra: list | None = None) -> tuple[fitting.RunHistory, fitting.SelectBestEpoch]:
    validate = Scripted(scores)
    history = fitting.RunHistory("val_", directory)
    selection = fitting.SelectBestEpoch("val_score", patience, directory,
                                        score_start=(lambda m: validate(m)["score"]) if score_start else None)
    callbacks = fitting.training_callbacks(history, directory, None, None, fitting.ValidationMetrics(validate, "val_"),
                                           selection, extra)
    model.fit(batches(), epochs=epochs, verbose=0, callbacks=callbacks)
    return history, selection


@pytest.mark.parametrize(("scores", "patience", "trained", "selected"), [
    ([0.5, 0.6, 0.4, 0.3, 0.2], 2, 4, 2),  # two epochs without improvement stop it after the 4th
    ([0.5, 0.6, 0.4, 0.3, 0.2], 0, 5, 2),  # patience 0: every epoch runs, the best is still kept
    ([0.1, 0.2, 0.3], 1, 3, 3),
])
def test_the_best_epochs_weights_are_restored(scores, patience, trained, selected) -> None:
    model, seen = tiny_model(), WeightsByEpoch()
    history, selection = train(model, scores, epochs=len(scores), patience=patience, extra=[seen])
    assert history.history["val_score"] == scores[:trained] and len(history.history["loss"]) == trained
    assert selection.selected_epochs == selected
    for expected, actual in zip(seen.weights[selected], model.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)


def test_the_starting_weights_win_when_no_epoch_beats_them() -> None:
    model = tiny_model()
    start = model.get_weights()
    history, selection = train(model, [0.9, 0.5, 0.6], epochs=2, patience=0, score_start=True)
    assert history.history["val_score"] == [0.5, 0.6] and selection.selected_epochs == 0
    for expected, actual in zip(start, model.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize(("scores", "selected"), [
    ([0.5, 0.7, 0.6, 0.75], 4),  # the best comes after the resume
    ([0.5, 0.7, 0.6, 0.65], 2),  # the best was the killed run's: its weights come back from the run folder
])
def test_a_killed_run_resumes_with_its_history_selection_and_optimizer(tmp_path: pathlib.Path, scores, selected
                                                                        ) -> None:
    def kill_after_second(epoch: int, logs: dict | None = None) -> None:
        if epoch + 1 == 2:
            raise Killed

    before, after = WeightsByEpoch(), WeightsByEpoch()
    with pytest.raises(Killed):
        train(tiny_model(), scores[:2], epochs=4, patience=0, directory=tmp_path,
              extra=[before, keras.callbacks.LambdaCallback(on_epoch_end=kill_after_second)])
    assert fitting.completed_epochs(tmp_path) == 2
    model = tiny_model()
    history, selection = train(model, scores[2:], epochs=4, patience=0, directory=tmp_path, extra=[after])
    assert history.history["val_score"] == scores and len(history.history["steps"]) == 4
    assert selection.selected_epochs == selected and sorted(after.weights) == [3, 4]  # epochs 1-2 not trained again
    for expected, actual in zip({**before.weights, **after.weights}[selected], model.get_weights(), strict=True):
        np.testing.assert_array_equal(actual, expected)
    if selected == 4:  # the backup brought the optimizer's step counter back (the best's own checkpoint would too)
        assert int(model.optimizer.iterations.numpy()) == 4 * STEPS
    assert fitting.completed_epochs(tmp_path) == 4 and not fitting.SelectBestEpoch.stopped(tmp_path)


def test_a_model_trained_with_a_backup_trains_again_from_where_it_ended(tmp_path: pathlib.Path) -> None:
    model = tiny_model()
    train(model, [0.5, 0.6], epochs=2, patience=0, directory=tmp_path)
    trained = model.get_weights()
    model.fit(batches(), epochs=1, verbose=0)  # a plain fit of the same model, e.g. one more warm epoch
    assert int(model.optimizer.iterations.numpy()) == 3 * STEPS
    assert not np.allclose(model.get_weights()[0], trained[0])


def test_a_run_that_stopped_early_says_so_and_forget_clears_it(tmp_path: pathlib.Path) -> None:
    train(tiny_model(), [0.5, 0.4, 0.3], epochs=3, patience=1, directory=tmp_path)
    assert fitting.SelectBestEpoch.stopped(tmp_path) and fitting.completed_epochs(tmp_path) == 2
    fitting.forget(tmp_path)
    assert fitting.completed_epochs(tmp_path) == 0 and not fitting.SelectBestEpoch.stopped(tmp_path)
