"""The client stays thin: no TensorFlow in its process, and its vendored protos match TF Serving's."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import get_model_metadata_pb2 as real_metadata
from tensorflow_serving.apis import predict_pb2 as real_predict

from recsys_common import contract
from serving._protos.tensorflow_serving.apis import get_model_metadata_pb2 as vendored_metadata
from serving._protos.tensorflow_serving.apis import predict_pb2 as vendored_predict
from serving._protos.tensorflow_serving.config import batching_parameters_pb2, monitoring_config_pb2
from serving.tensor_proto import from_tensor_proto, to_tensor_proto

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          check=False)


def test_importing_the_client_does_not_import_tensorflow():
    result = _python("import sys, serving.client; "
                     "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_serving')))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_recommending_does_not_import_tensorflow(toy_server_plain, toy):
    code = (
        "import sys\nfrom serving.client import RecommenderClient\n"
        f"with RecommenderClient({toy_server_plain.target!r}) as client:\n"
        "    print([r.item_id for r in client.recommend(user_id='42', k=3)])\n"
        "print(any(m.split('.')[0] == 'tensorflow' for m in sys.modules))\n"
    )
    result = _python(code)
    assert result.returncode == 0, result.stderr
    items, tensorflow_loaded = result.stdout.splitlines()
    assert items == str([item for item, _, _ in toy.expected("42", 0, [], 3)])
    assert tensorflow_loaded == "False"


def test_cli_module_runs(toy_server_plain):
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", "--target", toy_server_plain.target, "--user-id", "42", "-k", "3"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert len(result.stdout.splitlines()) == 2 + 3


@pytest.mark.parametrize(
    "array",
    [np.array([["a", "é", ""], ["x", "y", "z"]]), np.array([1, -2, 2**40], np.int64), np.array([[0.5, -1.25]],
                                                                                              np.float32)],
    ids=["string", "int64", "float32"],
)
def test_predict_request_round_trips_between_vendored_and_tensorflow_protos(array):
    real = real_predict.PredictRequest()
    real.model_spec.name = contract.RANKING
    real.model_spec.version_label = "canary"
    real.inputs["x"].CopyFrom(tf.make_tensor_proto(array))
    vendored = vendored_predict.PredictRequest.FromString(real.SerializeToString())
    assert vendored.model_spec.version_label == "canary"
    np.testing.assert_array_equal(from_tensor_proto(vendored.inputs["x"]).astype(array.dtype), array)

    vendored.inputs["y"].CopyFrom(to_tensor_proto(array, real.inputs["x"].dtype))
    back = real_predict.PredictRequest.FromString(vendored.SerializeToString())
    expected = np.char.encode(array, "utf-8") if array.dtype.kind == "U" else array
    np.testing.assert_array_equal(tf.make_ndarray(back.inputs["y"]), expected)
    assert back.inputs["x"] == real.inputs["x"]


def test_signature_def_map_parses_in_the_vendored_messages():
    signature_map = real_metadata.SignatureDefMap()
    info = signature_map.signature_def[contract.SIGNATURE_NAME].inputs["watch_history"]
    info.name, info.dtype = "serving_default_watch_history:0", tf.string.as_datatype_enum
    info.tensor_shape.dim.add(size=-1)
    info.tensor_shape.dim.add(size=-1)
    response = real_metadata.GetModelMetadataResponse()
    response.metadata["signature_def"].Pack(signature_map)
    parsed = vendored_metadata.GetModelMetadataResponse.FromString(response.SerializeToString())
    unpacked = vendored_metadata.SignatureDefMap.FromString(parsed.metadata["signature_def"].value)
    vendored_info = unpacked.signature_def[contract.SIGNATURE_NAME].inputs["watch_history"]
    assert (vendored_info.name, vendored_info.dtype) == (info.name, info.dtype)
    assert [dim.size for dim in vendored_info.tensor_shape.dim] == [-1, -1]


def test_vendored_names_do_not_clash_with_tensorflow_in_one_pool():
    assert vendored_predict.PredictRequest.DESCRIPTOR.full_name != real_predict.PredictRequest.DESCRIPTOR.full_name
    assert vendored_predict.DESCRIPTOR.name != real_predict.DESCRIPTOR.name
    assert vendored_predict.PredictRequest.DESCRIPTOR.fields_by_name.keys() == \
        real_predict.PredictRequest.DESCRIPTOR.fields_by_name.keys()


def test_batching_and_monitoring_protos_parse_tf_serving_examples():
    # The examples of TF Serving's batching guide and monitoring docs.
    batching = text_format.Parse(
        "max_batch_size { value: 128 }\nbatch_timeout_micros { value: 0 }\nmax_enqueued_batches { value: 1000000 }\n"
        "num_batch_threads { value: 8 }\nallowed_batch_sizes: 32\nallowed_batch_sizes: 128\n"
        "pad_variable_length_inputs: true\n",
        batching_parameters_pb2.BatchingParameters(),
    )
    assert (batching.max_batch_size.value, batching.num_batch_threads.value) == (128, 8)
    assert list(batching.allowed_batch_sizes) == [32, 128] and batching.pad_variable_length_inputs
    monitoring = text_format.Parse('prometheus_config { enable: true, path: "/monitoring/prometheus/metrics" }',
                                   monitoring_config_pb2.MonitoringConfig())
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path.startswith("/monitoring")
    with pytest.raises(text_format.ParseError, match="max_batch_sise"):
        text_format.Parse("max_batch_sise { value: 1 }", batching_parameters_pb2.BatchingParameters())


@pytest.mark.skipif(importlib.util.find_spec("grpc_tools") is None, reason="grpcio-tools (the dev extra) is absent")
def test_committed_protos_equal_a_fresh_generation(tmp_path):
    result = subprocess.run([sys.executable, "-m", "serving._protos.generate", "--output-root", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    generated = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*_pb2.py*"))
    assert len(generated) >= 2 * 10
    for relative in generated:
        assert (ROOT / relative).read_bytes() == (tmp_path / relative).read_bytes(), f"{relative} is stale"
