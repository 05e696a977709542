"""The `ranking` serving signature: one function for the export and for in-memory scoring.

    inputs:  contract.ranking_inputs(the ranking-only inputs the model reads): the user inputs, those
             (each optional: the SignatureDef's default is one row of "unknown", broadcast to the
             batch) and candidate_ids [B, N] ("" pads)
    outputs: scores [B, N] = sigmoid(logit), the watch probability;
             expected_watch_time [B, N] = exp(logit) * watch_time_unit * sampling_rate: the watch time, in
             the source's unit, that the user's next watch spends on the candidate (calibrated for
             the negative sampling rate, trainer.ranking.loss).
Padding candidates ("") score 0 on both outputs; unknown candidates and users are scored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from recsys_common import contract
from trainer.export.layout import signature_function
from trainer.ranking.models import RankingModel

MAX_LOGIT = 80.0  # exp(80) ~ 5.5e34 still fits float32; larger logits would overflow to inf


class _Untracked:
    """Holds an object without making it part of the SavedModel (only what `serve` reads is saved)."""

    def __init__(self, value: Any) -> None:
        self.value = value


class RankingSignature(tf.Module):
    """Wraps a ranking model with the signature's outputs; `serve` is what the SavedModel exports.

    The SavedModel holds the model's layers and its variables except the training-only ones (the loss
    metric's sync-on-read variables, which under MultiWorkerMirroredStrategy only every worker together can
    read, while the chief exports alone).
    """

    def __init__(self, model: RankingModel, watch_time_unit: float, sampling_rate: float) -> None:
        super().__init__(name="ranking_signature")
        if watch_time_unit <= 0 or sampling_rate <= 0:
            raise ValueError(f"watch_time_unit and sampling_rate must be > 0, got {watch_time_unit}, {sampling_rate}")
        self._model = _Untracked(model)
        self._inputs = _Untracked(contract.ranking_inputs(model.context_inputs))
        self.layers = list(model.layers)
        self.serving_variables = [variable for variable in model.variables
                                  if variable.synchronization != tf.VariableSynchronization.ON_READ]
        self.watch_time_unit = float(watch_time_unit)
        self.sampling_rate = float(sampling_rate)
        self.serve = signature_function(self._serve, self.inputs, optional=model.context_inputs)

    @property
    def inputs(self) -> tuple[contract.TensorSpec, ...]:
        """The signature's inputs: the contract's ranking inputs less the ranking-only ones the model ignores."""
        inputs: tuple[contract.TensorSpec, ...] = self._inputs.value
        return inputs

    def _serve(self, inputs: dict[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        candidates = inputs[contract.CANDIDATE_IDS]
        batch = tf.shape(candidates)[0]
        model = self._model.value
        features = {key: _batched(inputs[key], batch) if key in model.context_inputs else inputs[key]
                    for key in model.feature_keys}
        logits = model(features, training=False)
        padding = tf.equal(candidates, "")
        watch_probability = tf.sigmoid(logits)
        watch_time = tf.exp(tf.minimum(logits, MAX_LOGIT)) * (self.watch_time_unit * self.sampling_rate)
        return {
            contract.SCORES: tf.where(padding, 0.0, watch_probability),
            contract.EXPECTED_WATCH_TIME: tf.where(padding, 0.0, watch_time),
        }

    def __call__(self, features: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """Scores a request in memory: (scores [B, N], expected_watch_time [B, N]); see `request_tensors`."""
        outputs = self.serve(**request_tensors(features, self.inputs))
        return outputs[contract.SCORES].numpy(), outputs[contract.EXPECTED_WATCH_TIME].numpy()


def _batched(value: tf.Tensor, batch: tf.Tensor) -> tf.Tensor:
    """An optional input [B, ...] or its one-row default [1, ...], as [B, ...]."""
    return tf.broadcast_to(value, tf.concat([[batch], tf.shape(value)[1:]], axis=0))


def request_tensors(features: Mapping[str, Any],
                    inputs: tuple[contract.TensorSpec, ...] = contract.RANKING_INPUTS) -> dict[str, tf.Tensor]:
    """Checks a request and fills the inputs it leaves out with their defaults, as the client does.

    Ranking-only inputs that are not among `inputs` (a model that does not read them) are left out,
    as the client leaves out what the signature lacks.

    Args:
        features: candidate_ids [B, N] (required) and any of the user inputs ([B] or [B, H]).
        inputs: the signature's inputs (RankingSignature.inputs).

    Raises:
        ValueError: a missing candidate_ids, an unknown input name, a wrong rank or dtype, or inputs
            whose batch sizes differ; the message names the input.
    """
    unknown = sorted(set(features) - {spec.name for spec in contract.RANKING_INPUTS})
    if unknown:
        raise ValueError(f"ranking: unknown input(s) {unknown}; the signature takes "
                         f"{[spec.name for spec in contract.RANKING_INPUTS]}")
    if contract.CANDIDATE_IDS not in features:
        raise ValueError(f"ranking: the request has no {contract.CANDIDATE_IDS!r} [B, N]")
    batch = np.asarray(features[contract.CANDIDATE_IDS]).shape[0]
    return {spec.name: _tensor(spec, features.get(spec.name), batch) for spec in inputs}


def _tensor(spec: contract.TensorSpec, value: Any, batch: int) -> tf.Tensor:
    if value is None:
        shape = (batch, 1) if spec.rank == 2 else (batch,)
        value = np.full(shape, spec.default, dtype=object if spec.dtype == "string" else np.int64)
    array = np.asarray(value)
    if array.ndim != spec.rank:
        raise ValueError(f"ranking: input {spec.name!r} must have rank {spec.rank} "
                         f"({'[B, N]' if spec.rank == 2 else '[B]'}), got shape {array.shape}")
    if array.shape[0] != batch:
        raise ValueError(f"ranking: input {spec.name!r} has batch size {array.shape[0]}, "
                         f"{contract.CANDIDATE_IDS!r} has {batch}")
    if spec.dtype == "string":
        if array.dtype.kind not in "OSU" or not all(isinstance(v, (str, bytes)) for v in array.ravel()):
            raise ValueError(f"ranking: input {spec.name!r} must hold strings, got dtype {array.dtype}")
        return tf.constant(array.astype(object), dtype=tf.string)
    if array.dtype.kind not in "iu":
        raise ValueError(f"ranking: input {spec.name!r} must hold integers ({spec.dtype}), got dtype {array.dtype}")
    return tf.constant(array.astype(np.int64))
