"""Training with Keras `Model.fit`, the same way for both stages.

`training_callbacks` returns what a stage passes to `fit`, in the order Keras must call them:

    TrainingClock       times the epoch's training steps;
    ValidationMetrics   adds the epoch's validation metrics to its logs (what the callbacks after it see);
    SelectBestEpoch     early stopping on a validation metric, keeping the best epoch's weights;
    RunHistory          every epoch's record since the run began, kept across a resume (LogEpochs logs it);
    TensorBoard         the epoch records as summaries;
    BackupAndRestore    a backup of the model and optimizer after every epoch, restored when the same
                        run folder is trained again, so a killed run continues after its last epoch;
    progress bar, LogEpochs  what the `Report` names: the epoch's batches, and its record in the run log.

`epochs_to_train` says which epochs a `fit` in a run folder still has to train.

SelectBestEpoch and RunHistory keep one snapshot of their state per finished epoch (in memory, and as
JSON in the run folder when it has one) and go back to the snapshot of the epoch training starts from,
so they agree with the backup whatever moment a kill came at.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from trainer.progress import keras_batch_progress

EXAMPLE_LOSS = "example_loss"  # the metric of the epoch's mean loss per training example
SECONDS = "seconds"  # the epoch's training time, validation excluded
STEPS = "steps"  # the epoch's training steps
BACKUP, BEST, STATE = "backup", "best", "state"
Validator = Callable[[keras.Model], Mapping[str, float]]


class ValidationMetrics(keras.callbacks.Callback):
    """Adds `prefix + name` for each metric of `validate(model)` to every epoch's logs."""

    def __init__(self, validate: Validator, prefix: str) -> None:
        super().__init__()
        self.validate, self.prefix = validate, prefix

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs.update({self.prefix + name: float(value) for name, value in self.validate(self.model).items()})


class _Snapshots:
    """One JSON-able state per finished epoch (index 0: before the first epoch), saved to `path` if given."""

    def __init__(self, path: pathlib.Path | None) -> None:
        self.path = path
        self.states: list[dict[str, Any]] = []
        if path is not None and path.exists():
            self.states = json.loads(path.read_text())

    def latest(self) -> dict[str, Any] | None:
        return self.states[-1] if self.states else None

    def rewind(self, epochs: int) -> dict[str, Any]:
        """Drops the snapshots after `epochs` finished epochs and returns that one."""
        if len(self.states) <= epochs:
            raise RuntimeError(f"{self.path}: holds {len(self.states) - 1} epochs, training resumes after {epochs}; "
                               "remove the run folder's checkpoints to start again")
        del self.states[epochs + 1:]
        return self.states[epochs]

    def record(self, state: dict[str, Any]) -> None:
        self.states.append(state)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.path.with_name(self.path.name + ".partial")
            partial.write_text(json.dumps(self.states))
            partial.replace(self.path)


class SelectBestEpoch(keras.callbacks.EarlyStopping):
    """Early stopping on the maximum of `monitor`, restoring the weights of the best epoch at the end.

    Unlike Keras' own, the weights training starts from can be the best (`score_start` scores them
    before the first epoch: a pretrained start may beat every later epoch), `patience=0` never stops,
    the best weights are restored whether or not training stopped early, and with a `directory` the
    state and the best weights are kept there, so a resumed run selects as an uninterrupted one.

    Attributes:
        selected_epochs: the epochs behind the restored weights (0: the start), after training.
    """

    def __init__(self, monitor: str, patience: int, directory: pathlib.Path | None = None,
                 score_start: Callable[[keras.Model], float] | None = None) -> None:
        super().__init__(monitor=monitor, mode="max", patience=patience, restore_best_weights=True)
        self.score_start, self.directory = score_start, directory
        self.selected_epochs = 0
        self._snapshots = _Snapshots(_state_file(directory, "early_stopping"))
        self._checkpoint: tf.train.CheckpointManager | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self.directory is not None:
            self._checkpoint = tf.train.CheckpointManager(tf.train.Checkpoint(model=self.model),
                                                          str(self.directory / BEST), max_to_keep=1)
        if self._snapshots.latest() is None:
            self.best_epoch = -1  # no weights kept yet
            start = self.score_start(self.model) if self.score_start is not None else None
            if start is not None:
                self.best = float(start)
                self._keep(0)
            self._record()
        self._load(self._snapshots.states[-1])

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._load(self._snapshots.rewind(epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        current = self.get_monitor_value(logs)
        if current is None:
            return
        if self._is_improvement(current, self.best):
            self.best, self.wait = float(current), 0
            self._keep(epoch + 1)
        else:
            self.wait += 1
            if 0 < self.patience <= self.wait:
                self.stopped_epoch = epoch
                self.model.stop_training = True
        self._record()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        elif self.best_epoch >= 0 and self._checkpoint is not None and self._checkpoint.latest_checkpoint:
            self._checkpoint.checkpoint.restore(self._checkpoint.latest_checkpoint).expect_partial()
        self.selected_epochs = max(self.best_epoch, 0)

    @staticmethod
    def stopped(directory: pathlib.Path | None) -> bool:
        """Whether the run kept in `directory` has stopped early (a resume then trains no further)."""
        latest = _Snapshots(_state_file(directory, "early_stopping")).latest()
        return bool(latest and latest["stopped"])

    def _keep(self, epochs: int) -> None:
        self.best_epoch = epochs
        self.best_weights = self.model.get_weights()
        if self._checkpoint is not None:
            self._checkpoint.save()

    def _record(self) -> None:
        self._snapshots.record({"best": float(self.best), "best_epoch": self.best_epoch, "wait": self.wait,
                                "stopped": bool(self.model.stop_training)})

    def _load(self, state: dict[str, Any]) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]


class TrainingClock(keras.callbacks.Callback):
    """Adds SECONDS, the wall time of the epoch's training steps (before any validation), and STEPS to its logs."""

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._started, self._first_step = time.perf_counter(), self._optimizer_steps()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs[SECONDS] = time.perf_counter() - self._started
            logs[STEPS] = self._optimizer_steps() - self._first_step

    def _optimizer_steps(self) -> int:
        # The optimizer's counter, not a batch hook: ParameterServerStrategy allows no batch-level callbacks.
        return int(self.model.optimizer.iterations.numpy())


class RunHistory(keras.callbacks.Callback):
    """Each epoch's record since the run began (kept in `directory` across a resume): `history[key] -> [values]`.

    A record holds the loss (the `EXAMPLE_LOSS` metric, as "loss"), the logs whose keys start with
    `validation_prefix`, and the training time and steps (SECONDS and STEPS, from `TrainingClock`).
    """

    def __init__(self, validation_prefix: str, directory: pathlib.Path | None = None) -> None:
        super().__init__()
        self.validation_prefix = validation_prefix
        self._snapshots = _Snapshots(_state_file(directory, "history"))
        self.history: dict[str, list[float]] = {}

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        if self._snapshots.latest() is None:
            self._snapshots.record({})
        self.history = dict(self._snapshots.latest() or {})

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.history = dict(self._snapshots.rewind(epoch))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = logs or {}
        record = {"loss": float(logs.get(EXAMPLE_LOSS, np.nan))}
        record.update({key: float(value) for key, value in logs.items() if key.startswith(self.validation_prefix)})
        record.update({key: float(logs[key]) for key in (STEPS, SECONDS) if key in logs})
        self.history = {key: [*self.history.get(key, []), value] for key, value in record.items()}
        self._snapshots.record(self.history)

    def last(self) -> dict[str, float]:
        """The latest epoch's record."""
        return {key: values[-1] for key, values in self.history.items()}


class LogEpochs(keras.callbacks.Callback):
    """Logs each epoch's `RunHistory` record as "<label> epoch <n>: <record>"."""

    def __init__(self, label: str, history: RunHistory, log: logging.Logger) -> None:
        super().__init__()
        self.label, self.history, self.log = label, history, log

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        record = ", ".join(f"{key} {value:.4f}" for key, value in self.history.last().items())
        self.log.info("%s epoch %d: %s", self.label, epoch + 1, record)


def _state_file(directory: pathlib.Path | None, name: str) -> pathlib.Path | None:
    return directory / STATE / f"{name}.json" if directory is not None else None


def completed_epochs(directory: pathlib.Path | None) -> int:
    """The epochs that the BackupAndRestore backup in `directory` has finished (0: no backup)."""
    if directory is None:
        return 0
    latest = tf.train.latest_checkpoint(str(directory / BACKUP / "chief"))
    if latest is None:
        return 0
    # WorkerTrainingState keeps the last finished epoch (0-based) as "ckpt_saved_epoch".
    return int(tf.train.load_checkpoint(latest).get_tensor("ckpt_saved_epoch/.ATTRIBUTES/VARIABLE_VALUE")) + 1


def forget(directory: pathlib.Path | None) -> None:
    """Removes the backup, best weights and state of an earlier run in `directory` (a run not resumed)."""
    if directory is not None:
        for name in (BACKUP, BEST, STATE):
            shutil.rmtree(directory / name, ignore_errors=True)


class BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, leaving the model able to `fit` again: tf_keras deletes `model._training_state`
    when training ends, so that any later `fit` of the same model fails with an AttributeError."""

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_end(logs)
        self.model._training_state = None


@dataclasses.dataclass(frozen=True)
class Report:
    """How a `fit` reports: a progress bar over its `steps` batches, and a log line per epoch in `log`."""

    label: str
    steps: int
    log: logging.Logger


def epochs_to_train(directory: pathlib.Path | None, epochs: int) -> tuple[int, int]:
    """(start, end) of a `fit` of `epochs` epochs in `directory`: the epochs its backup has finished, and `epochs`,
    or `start` when the run there stopped early (a resume then trains no further)."""
    start = completed_epochs(directory)
    return start, start if SelectBestEpoch.stopped(directory) else epochs


def training_callbacks(history: RunHistory, directory: pathlib.Path | None, tensorboard_dir: pathlib.Path | None,
                       report: Report | None = None, validation: ValidationMetrics | None = None,
                       selection: SelectBestEpoch | None = None, extra: list[keras.callbacks.Callback] | None = None
                       ) -> list[keras.callbacks.Callback]:
    """The callbacks of one `fit`, in the order they must run (module docstring); `extra` run last."""
    callbacks: list[keras.callbacks.Callback] = [TrainingClock()]
    callbacks += [c for c in (validation, selection) if c is not None]
    callbacks.append(history)
    if tensorboard_dir is not None:
        callbacks.append(keras.callbacks.TensorBoard(str(tensorboard_dir), write_graph=False, profile_batch=0))
    if directory is not None:
        callbacks.append(BackupAndRestore(str(directory / BACKUP), delete_checkpoint=False))
    if report is not None:
        callbacks += [keras_batch_progress(report.label, report.steps, EXAMPLE_LOSS),
                      LogEpochs(report.label, history, report.log)]
    return callbacks + list(extra or [])
