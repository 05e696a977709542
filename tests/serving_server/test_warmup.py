"""Warmup files are decoded under the request caps: a hostile record fails the load, naming file and record."""

from __future__ import annotations

from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_test_models import Affine, save_module
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from recsys_common.layout import warmup_file
from serving.errors import ServingError
from serving.server import ModelServer, parse_options

CAP = 2**20
HUGE = 10**9  # floats: 4e9 bytes once decoded, from a proto of a few bytes (the "no values" short form)


def _log(tensor: tensor_pb2.TensorProto) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="default"))
    request.inputs["x"].CopyFrom(tensor)
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def test_a_warmup_record_over_the_request_byte_cap_fails_the_load_naming_file_and_record(tmp_path: Path) -> None:
    version_dir = save_module(Affine(1.0), tmp_path / "affine" / "1")
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=HUGE)]))
    path = warmup_file(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(_log(tf.make_tensor_proto(np.array([1.0, 2.0], np.float32))).SerializeToString())
        writer.write(_log(huge).SerializeToString())
    server = ModelServer(parse_options([f"--model_base_path={tmp_path / 'affine'}", f"--max_request_bytes={CAP}",
                                        "--file_system_poll_wait_seconds=0", "--max_num_load_retries=0"]))
    try:
        server.manager.poll_once()
        [status] = server.manager.status("default", 1)
    finally:
        server.manager.stop()
    message = status.status.error_message
    assert status.status.error_code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message
    assert f"Warmup request 1 of {path} failed" in message
    assert f"input 'x' (shape [{HUGE}]) takes the request to {4 * HUGE} bytes" in message
    assert f"limit of {CAP} (--max_request_bytes)" in message
    with pytest.raises(ServingError, match="default"):  # the version never served
        server.manager.resolve_version("default")
