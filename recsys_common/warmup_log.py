"""The warmup-request file of a version: a TFRecord of tensorflow.serving.PredictionLog.

The exporter writes it and reads it back; the server replays it before a version serves
(TF Serving's rules: at most MAX_WARMUP_RECORDS records).
"""

from __future__ import annotations

from pathlib import Path

from recsys_common import tf_env  # noqa: F401  (before TensorFlow loads)

# isort: split
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

MAX_WARMUP_RECORDS = 1000


class WarmupFileError(ValueError):
    """A warmup file that cannot be read; the message names the file."""


def read_warmup_logs(path: Path) -> list[prediction_log_pb2.PredictionLog]:
    """The PredictionLog records of a warmup file.

    Raises:
        WarmupFileError: unreadable file, a record that is not a PredictionLog, or more than
            MAX_WARMUP_RECORDS records.
    """
    logs: list[prediction_log_pb2.PredictionLog] = []
    try:
        for record in tf.data.TFRecordDataset(str(path)):
            if len(logs) >= MAX_WARMUP_RECORDS:
                raise WarmupFileError(f"Number of warmup records exceeds the maximum ({MAX_WARMUP_RECORDS}) "
                                      f"at {path}")
            logs.append(prediction_log_pb2.PredictionLog.FromString(record.numpy()))
    except tf.errors.OpError as error:
        raise WarmupFileError(f"Cannot read warmup file {path}: {error.message}") from error
    except WarmupFileError:
        raise
    except ValueError as error:  # protobuf DecodeError
        raise WarmupFileError(f"Warmup file {path} holds a record that is not a PredictionLog: {error}") from error
    return logs
