"""Requests against the shared server: formats, ScaNN, warmup, metrics, and malformed requests that must
get TF Serving's status codes while the server keeps serving."""

from __future__ import annotations

import base64
import re
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_test_models import SCANN_K, predict_request, scann_items
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2

from recsys_common import contract
from serving.testing import ServerProcess


def assert_still_serving(server: ServerProcess) -> None:
    assert server.post_json("/v1/models/affine:predict", {"instances": [1.0, 2.5]}) == (
        200, {"predictions": [2.0, 3.5]})


def test_row_format_with_several_inputs_and_outputs_and_b64(main_server: ServerProcess) -> None:
    body = {"instances": [{"ids": {"b64": base64.b64encode(b"\xff\x00").decode()}, "counts": [1, 2]},
                          {"ids": "b", "counts": [3, 4]}]}
    status, answer = main_server.post_json("/v1/models/multi:predict", body)
    assert status == 200
    first, second = answer["predictions"]
    # "echo_bytes" ends in _bytes: always base64; "label" is text unless it is not UTF-8.
    assert first["echo_bytes"] == {"b64": base64.b64encode(b"\xff\x00").decode()}
    assert first["label"] == {"b64": base64.b64encode(b"\xff\x00!").decode()}
    assert second == {"echo_bytes": {"b64": base64.b64encode(b"b").decode()}, "label": "b!", "total": 7}
    assert first["total"] == 3


def test_columnar_format_with_several_outputs(main_server: ServerProcess) -> None:
    body = {"inputs": {"ids": ["x", "y"], "counts": [[1, 1, 1], [2, 2, 2]]}}
    status, answer = main_server.post_json("/v1/models/multi:predict", body)
    assert status == 200
    assert answer["outputs"]["label"] == ["x!", "y!"]
    assert answer["outputs"]["total"] == [3, 6]


def test_float_outputs_use_the_shortest_exact_repr(main_server: ServerProcess) -> None:
    inputs = [-0.9, 1e-3, 0.2]
    status, answer = main_server.post_json("/v1/models/affine:predict", {"inputs": inputs})
    assert status == 200
    expected = [np.float32(x) + np.float32(1.0) for x in inputs]
    # Exact float32 values, written without the noise digits of a float -> double conversion.
    assert [np.float32(y) for y in answer["outputs"]] == expected
    assert [repr(y) for y in answer["outputs"]] == [str(y) for y in expected] == ["0.100000024", "1.001", "1.2"]


def test_scann_retrieval_served_over_grpc_equals_numpy_brute_force(stubs: tuple[Any, Any]) -> None:
    query = np.random.default_rng(5).normal(size=(2, 4)).astype(np.float32)
    response = stubs[0].Predict(predict_request("scann", {"query": query}), timeout=10)
    item_ids = tf.make_ndarray(response.outputs[contract.ITEM_IDS])
    embeddings, ids = scann_items()
    scores = (query @ np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)) @ embeddings.T
    np.testing.assert_array_equal(item_ids, ids[np.argsort(-scores, axis=1)[:, :SCANN_K]])


def test_warmup_requests_ran_before_the_first_request(main_server: ServerProcess) -> None:
    # The counter model's export carries 3 warmup records; this is the first real request it sees.
    status, answer = main_server.post_json("/v1/models/counter:predict", {"instances": [1.0]})
    assert status == 200
    assert answer["predictions"] == [{"runs": 4, "y": 2.0}]


def test_prometheus_metrics_count_requests(main_server: ServerProcess) -> None:
    for _ in range(3):
        assert_still_serving(main_server)
    main_server.post_json("/v1/models/affine:predict", {"instances": ["not a float"]})
    status, text = main_server.get_json("/monitoring/prometheus/metrics")
    assert status == 200
    ok = re.search(r':tensorflow:serving:request_count\{model_name="affine",status="OK"\} (\d+)', text)
    bad = re.search(r':tensorflow:serving:request_count\{model_name="affine",status="INVALID_ARGUMENT"\} (\d+)', text)
    assert ok and int(ok.group(1)) >= 3
    assert bad and int(bad.group(1)) >= 1
    assert re.search(r':tensorflow:serving:request_latency_count\{model_name="affine",API="Predict",'
                     r'entrypoint="REST"\} \d+', text)


def _tensor(dtype: int, shape: list[int], **values: Any) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


GRPC_CASES = [
    ("unknown model", {"model": "nope"}, grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    ("unknown version", {"version": 9}, grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(multi, 9)"),
    ("unknown label", {"label": "canary"}, grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: canary"),
    ("unknown signature", {"signature": "nope"}, grpc.StatusCode.FAILED_PRECONDITION,
     'Serving signature key "nope" not found.'),
    ("missing input", {"inputs": {"ids": np.array([b"a"])}}, grpc.StatusCode.INVALID_ARGUMENT,
     "Missing but required: {counts}."),
    ("extra input", {"inputs": {"ids": np.array([b"a"]), "counts": np.array([[1]]), "z": np.array([1])}},
     grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {z}."),
    ("wrong dtype", {"inputs": {"ids": np.array([b"a"]), "counts": np.array([[1.5]], np.float32)}},
     grpc.StatusCode.INVALID_ARGUMENT, "Type mismatch for input 'counts': actual float vs. expect int64"),
    ("wrong shape", {"inputs": {"ids": np.array([b"a"]), "counts": np.array([1])}},
     grpc.StatusCode.INVALID_ARGUMENT, "input 'counts' has shape [1] but the signature declares [-1, -1]"),
    ("malformed tensor", {"raw": {"ids": _tensor(types_pb2.DT_STRING, [1], string_val=[b"a", b"b"]),
                                   "counts": _tensor(types_pb2.DT_INT64, [1, 1], int64_val=[1])}},
     grpc.StatusCode.INVALID_ARGUMENT, "tensor parsing error: ids"),
]


@pytest.mark.parametrize(("case", "request_args", "code", "message"), GRPC_CASES, ids=[c[0] for c in GRPC_CASES])
def test_malformed_grpc_predict(main_server: ServerProcess, stubs: tuple[Any, Any], case: str,
                                request_args: dict[str, Any], code: grpc.StatusCode, message: str) -> None:
    args = {"model": "multi", "inputs": {"ids": np.array([b"a"]), "counts": np.array([[1, 2]])}, **request_args}
    raw = args.pop("raw", None)
    request = predict_request(args.pop("model"), args.pop("inputs"), **args)
    for name, proto in (raw or {}).items():
        request.inputs[name].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    assert caught.value.code() == code
    assert message in caught.value.details()
    assert_still_serving(main_server)


def test_grpc_status_and_metadata_errors(stubs: tuple[Any, Any]) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stubs[1].GetModelStatus(get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="x")))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert unknown.value.details() == "Could not find any versions of model x"
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_pb2.ModelSpec(name="affine"),
                                                             metadata_field=["nope"])
    with pytest.raises(grpc.RpcError) as field:
        stubs[0].GetModelMetadata(request)
    assert field.value.code() == grpc.StatusCode.INVALID_ARGUMENT


GOOD_MULTI = {"instances": [{"ids": "a", "counts": [1]}]}
REST_CASES = [
    ("bad json", "POST", "/v1/models/affine:predict", b"{not json", 400, "JSON Parse error"),
    ("empty body", "POST", "/v1/models/affine:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("not an object", "POST", "/v1/models/affine:predict", b"[1.0]", 400, "Is not object"),
    ("no inputs", "POST", "/v1/models/affine:predict", b'{"x": [1.0]}', 400, "Missing 'inputs' or 'instances' key"),
    ("both formats", "POST", "/v1/models/affine:predict", b'{"inputs": [1.0], "instances": [1.0]}', 400,
     "expecting only one of 'inputs' or 'instances'"),
    ("empty instances", "POST", "/v1/models/affine:predict", b'{"instances": []}', 400, "No values in 'instances'"),
    ("wrong dtype", "POST", "/v1/models/affine:predict", b'{"instances": ["a"]}', 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ("ragged rows", "POST", "/v1/models/multi:predict",
     b'{"instances": [{"ids": "a", "counts": [1]}, {"ids": "b", "counts": [1, 2]}]}', 400,
     "Expecting tensor size: 1 but got: 2"),
    ("ragged list", "POST", "/v1/models/multi:predict", b'{"inputs": {"ids": ["a"], "counts": [[1], [1, 2]]}}', 400,
     "Encountered list at unexpected size"),
    ("missing key", "POST", "/v1/models/multi:predict", b'{"instances": [{"ids": "a"}]}', 400,
     "keys must be equal to: counts,ids"),
    ("missing input", "POST", "/v1/models/multi:predict", b'{"inputs": {"ids": ["a"]}}', 400,
     "Missing named input: counts in 'inputs' object."),
    ("extra input", "POST", "/v1/models/multi:predict", b'{"inputs": {"ids": ["a"], "counts": [[1]], "z": [1]}}',
     400, "Sent extra: {z}"),
    ("wrong shape", "POST", "/v1/models/multi:predict", b'{"inputs": {"ids": ["a"], "counts": [1]}}', 400,
     "input 'counts' has shape [1]"),
    ("bad b64", "POST", "/v1/models/multi:predict", b'{"inputs": {"ids": [{"b64": "%%"}], "counts": [[1]]}}', 400,
     "Unable to base64 decode"),
    ("unknown signature", "POST", "/v1/models/affine:predict", b'{"signature_name": "nope", "instances": [1.0]}',
     400, 'Serving signature name: "nope" not found in signature def'),
    ("signature not a string", "POST", "/v1/models/affine:predict", b'{"signature_name": 1, "instances": [1.0]}',
     400, "'signature_name' key must be a string value."),
    ("unknown model", "POST", "/v1/models/nope:predict", b'{"instances": [1.0]}', 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "POST", "/v1/models/affine/versions/7:predict", b'{"instances": [1.0]}', 404,
     "Servable not found for request: Specific(affine, 7)"),
    ("unknown label", "POST", "/v1/models/affine/labels/stable:predict", b'{"instances": [1.0]}', 400,
     "Unrecognized servable version label: stable"),
    ("unknown method", "POST", "/v1/models/affine:explain", b'{"instances": [1.0]}', 400, "Malformed request"),
    ("status of unknown model", "GET", "/v1/models/nope", None, 404, "Could not find any versions of model nope"),
    ("status of unknown version", "GET", "/v1/models/affine/versions/5", None, 404,
     "Could not find version 5 of model affine"),
    ("metadata of unknown model", "GET", "/v1/models/nope/metadata", None, 404, "Servable not found"),
    ("classify without examples", "POST", "/v1/models/affine:classify", b'{"context": {}}', 400,
     "key 'examples' is expected"),
    ("classify with a null feature", "POST", "/v1/models/affine:classify", b'{"examples": [{"x": null}]}', 400,
     "Feature: x has element with unexpected JSON type: Null"),
    ("regress a non-regression signature", "POST", "/v1/models/affine:regress", b'{"examples": [{"x": 1.0}]}', 400,
     "No output Tensor found with key outputs"),
    ("not the API", "GET", "/v2/health", None, 404, "No handler"),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "http_status", "message"), REST_CASES,
                         ids=[c[0] for c in REST_CASES])
def test_malformed_rest_requests(main_server: ServerProcess, case: str, method: str, path: str, body: bytes | None,
                                 http_status: int, message: str) -> None:
    status, answer = main_server.request(method, path, body, timeout=10)
    assert status == http_status
    assert set(answer) == {"error"}
    assert message in answer["error"]
    assert_still_serving(main_server)
