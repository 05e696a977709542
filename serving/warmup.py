"""Replays a version's warmup requests (assets.extra/tf_serving_warmup_requests) before it serves.

The file is a TFRecord of tensorflow.serving.PredictionLog; like TF Serving, each Predict,
Classify or Regress record is run against the freshly loaded model, and a failing record
fails the load (a version that cannot answer its own warmup requests must not serve).
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import classify_regress, contract
from serving.errors import ServingError, invalid_argument
from serving.session_model import SessionModel
from serving.tensor_codec import from_tensor_proto

MAX_WARMUP_RECORDS = 1000


def warmup_file(version_dir: Path) -> Path:
    return Path(version_dir) / contract.ASSETS_EXTRA_DIR / contract.WARMUP_FILE


def read_warmup_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a warmup file (at most MAX_WARMUP_RECORDS, as in TF Serving)."""
    logs: list[prediction_log_pb2.PredictionLog] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            if len(logs) >= MAX_WARMUP_RECORDS:
                raise invalid_argument(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                                       f"at {path}")
            logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    except tf.errors.OpError as error:
        raise invalid_argument(f"Cannot read warmup file {path}: {error.message}") from error
    except ValueError as error:  # protobuf DecodeError
        raise invalid_argument(f"Warmup file {path} holds a record that is not a PredictionLog: {error}") from error
    return logs


def replay_log(model: SessionModel, log: prediction_log_pb2.PredictionLog) -> None:
    """Runs one warmup record on the model; raises ServingError when it fails."""
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        inputs = {alias: from_tensor_proto(proto, alias) for alias, proto in request.inputs.items()}
        model.run(request.model_spec.signature_name, inputs, tuple(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = log.classify_log.request if kind == "classify_log" else log.regress_log.request
        name = request.model_spec.signature_name or contract.SIGNATURE_NAME
        handler = classify_regress.classify if kind == "classify_log" else classify_regress.regress
        handler(name, model.signature_def(name), request.input, model.run)
    else:
        raise invalid_argument(f"Unsupported warmup record type: {kind}")


def replay_warmup(model: SessionModel, version_dir: Path) -> int:
    """Replays the warmup file of a version, if it has one.

    Returns:
        The number of records replayed (0 without a warmup file).

    Raises:
        ServingError: the first failing record, with the file named.
    """
    path = warmup_file(version_dir)
    if not path.is_file():
        return 0
    logs = read_warmup_logs(path)
    for index, log in enumerate(logs):
        try:
            replay_log(model, log)
        except ServingError as error:
            raise ServingError(error.code, f"Warmup request {index} of {path} failed: {error.message}") from error
    return len(logs)
