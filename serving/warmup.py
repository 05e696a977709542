"""Replays a version's warmup requests (assets.extra/tf_serving_warmup_requests) before it serves.

The file is a TFRecord of tensorflow.serving.PredictionLog; like TF Serving, each Predict,
Classify or Regress record is run against the freshly loaded model, and a failing record
fails the load (a version that cannot answer its own warmup requests must not serve).
Predict records are decoded as requests are (`core.decode_inputs`), under --max_request_bytes.
"""

from __future__ import annotations

from pathlib import Path

from tensorflow_serving.apis import prediction_log_pb2

from recsys_common import contract
from recsys_common.layout import warmup_file
from recsys_common.warmup_log import WarmupFileError, read_warmup_logs
from serving import classify_regress
from serving.core import decode_inputs
from serving.errors import ServingError, invalid_argument
from serving.session_model import SessionModel


def replay_log(model: SessionModel, log: prediction_log_pb2.PredictionLog, max_bytes: int) -> None:
    """Runs one warmup record on the model; raises ServingError when it fails.

    Args:
        model: the freshly loaded version.
        log: one record of the warmup file.
        max_bytes: the most bytes a Predict record's tensors may take once decoded (--max_request_bytes).
    """
    kind = log.WhichOneof("log_type")
    if kind == "predict_log":
        request = log.predict_log.request
        inputs = decode_inputs(request.inputs, max_bytes)
        model.run(request.model_spec.signature_name, inputs, tuple(request.output_filter))
    elif kind in ("classify_log", "regress_log"):
        request = log.classify_log.request if kind == "classify_log" else log.regress_log.request
        name = request.model_spec.signature_name or contract.SIGNATURE_NAME
        handler = classify_regress.classify if kind == "classify_log" else classify_regress.regress
        handler(name, model.signature_def(name), request.input, model.run)
    else:
        raise invalid_argument(f"Unsupported warmup record type: {kind}")


def replay_warmup(model: SessionModel, version_dir: Path, max_bytes: int) -> int:
    """Replays the warmup file of a version, if it has one.

    Args:
        model: the freshly loaded version.
        version_dir: its folder.
        max_bytes: the most bytes a Predict record's tensors may take once decoded (--max_request_bytes).

    Returns:
        The number of records replayed (0 without a warmup file).

    Raises:
        ServingError: the first failing record, with the file named.
    """
    path = warmup_file(version_dir)
    if not path.is_file():
        return 0
    try:
        logs = read_warmup_logs(path)
    except WarmupFileError as error:
        raise invalid_argument(str(error)) from error
    for index, log in enumerate(logs):
        try:
            replay_log(model, log, max_bytes)
        except ServingError as error:
            raise ServingError(error.code, f"Warmup request {index} of {path} failed: {error.message}") from error
    return len(logs)
