"""Bad input answered with a clear INVALID_ARGUMENT naming what is wrong, before the model runs: lone UTF-16
surrogates and duplicate keys in JSON, shapes that disagree with the signature, shapes no array can take,
and out-of-range ports."""

from __future__ import annotations

from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_test_models import predict_request
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.server import parse_options
from serving.testing import ServerProcess

MULTI = "/v1/models/multi:predict"


def assert_still_serving(server: ServerProcess) -> None:
    assert server.post_json("/v1/models/affine:predict", {"instances": [1.0, 2.5]}) == (
        200, {"predictions": [2.0, 3.5]})


def assert_grpc_still_serving(stub: Any) -> None:
    response = stub.Predict(predict_request("affine", {"x": np.array([1.0, 2.5], np.float32)}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [2.0, 3.5])


# Raw bytes: "\ud800" reaches the server as the six-character JSON escape of a lone surrogate.
SURROGATE_CASES = [
    ("row value", MULTI, rb'{"instances": [{"ids": "\ud800", "counts": [1]}]}', "key: ids"),
    ("column value", MULTI, rb'{"inputs": {"ids": ["\ud800"], "counts": [[1]]}}', "input 'ids'"),
    ("list element", MULTI, rb'{"inputs": {"ids": ["a", "\ud800"], "counts": [[1], [2]]}}', "input 'ids'"),
    ("signature name", MULTI, rb'{"signature_name": "\ud800", "instances": [{"ids": "a", "counts": [1]}]}',
     "'signature_name'"),
    ("object key", MULTI, rb'{"instances": [{"\ud800": "a", "counts": [1]}]}', "key"),
    ("example value", "/v1/models/affine:classify", rb'{"examples": [{"x": "\ud800"}]}', "Feature: x"),
    ("example list", "/v1/models/affine:regress", rb'{"examples": [{"x": ["a", "\udfff"]}]}', "Feature: x"),
    ("context value", "/v1/models/affine:classify", rb'{"context": {"c": "\ud800"}, "examples": [{"x": 1}]}',
     "Feature: c"),
]


@pytest.mark.parametrize(("case", "path", "body", "names"), SURROGATE_CASES, ids=[c[0] for c in SURROGATE_CASES])
def test_a_lone_surrogate_is_refused_naming_where(main_server: ServerProcess, case: str, path: str, body: bytes,
                                                  names: str) -> None:
    status, answer = main_server.request("POST", path, body, timeout=10)
    assert status == 400
    assert set(answer) == {"error"}
    assert "not valid UTF-8 (lone surrogate)" in answer["error"] and names in answer["error"]
    assert "UnicodeEncodeError" not in main_server.log()
    assert_still_serving(main_server)


DUPLICATE_CASES = [
    ("instance key", MULTI, b'{"instances": [{"ids": "a", "counts": [1], "ids": "b"}]}', '"ids"'),
    ("top-level key", MULTI, b'{"instances": [{"ids": "a", "counts": [1]}], "instances": []}', '"instances"'),
    ("column key", MULTI, b'{"inputs": {"ids": ["a"], "counts": [[1]], "counts": [[2]]}}', '"counts"'),
    ("example feature", "/v1/models/affine:classify", b'{"examples": [{"x": 1.0, "x": 2.0}]}', '"x"'),
]


@pytest.mark.parametrize(("case", "path", "body", "key"), DUPLICATE_CASES, ids=[c[0] for c in DUPLICATE_CASES])
def test_a_duplicate_json_key_is_refused_naming_it(main_server: ServerProcess, case: str, path: str, body: bytes,
                                                   key: str) -> None:
    status, answer = main_server.request("POST", path, body, timeout=10)
    assert status == 400
    assert answer == {"error": f"JSON Parse error: duplicate key {key} in an object"}
    assert_still_serving(main_server)


def _declared(alias: str, shape: list[int], declared: list[int]) -> str:
    return f"input '{alias}' has shape {shape} but the signature declares {declared}"


# (case, model, inputs, the message): multi takes ids [-1] string and counts [-1, -1] int64, scann query [-1, 4].
SHAPE_CASES = [
    ("scalar ids", "multi", {"ids": "a", "counts": [[1]]}, _declared("ids", [], [-1])),
    ("2-D ids", "multi", {"ids": [["a"]], "counts": [[1]]}, _declared("ids", [1, 1], [-1])),
    ("1-D counts", "multi", {"ids": ["a"], "counts": [1]}, _declared("counts", [1], [-1, -1])),
    ("3-D counts", "multi", {"ids": ["a", "b"], "counts": [[[1], [2]]] * 2}, _declared("counts", [2, 2, 1], [-1, -1])),
    ("all-empty batch", "multi", {"ids": [], "counts": []}, _declared("counts", [0], [-1, -1])),
    ("known dimension", "scann", {"query": [[1.0, 2.0, 3.0]]}, _declared("query", [1, 3], [-1, 4])),
]
_DTYPES = {"ids": np.object_, "counts": np.int64, "query": np.float32}


@pytest.mark.parametrize(("case", "model", "inputs", "message"), SHAPE_CASES, ids=[c[0] for c in SHAPE_CASES])
def test_a_shape_the_signature_does_not_declare_is_refused_before_the_run(
        main_server: ServerProcess, stubs: tuple[Any, Any], case: str, model: str, inputs: dict[str, Any],
        message: str) -> None:
    status, answer = main_server.post_json(f"/v1/models/{model}:predict", {"inputs": inputs})
    assert (status, answer) == (400, {"error": message})
    arrays = {alias: np.array(value, dtype=_DTYPES[alias]) for alias, value in inputs.items()}
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(predict_request(model, arrays), timeout=10)
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)
    assert_grpc_still_serving(stubs[0])


def test_an_empty_batch_of_the_declared_rank_still_runs(main_server: ServerProcess, stubs: tuple[Any, Any]) -> None:
    request = predict_request("multi", {"ids": np.zeros([0], np.object_), "counts": np.zeros([0, 3], np.int64)})
    response = stubs[0].Predict(request, timeout=10)
    assert tf.make_ndarray(response.outputs["total"]).shape == (0,)
    assert main_server.post_json("/v1/models/affine:predict", {"inputs": {"x": []}}) == (200, {"outputs": []})


def test_zero_rows_of_a_shape_no_array_can_take_are_refused_naming_the_input(stubs: tuple[Any, Any]) -> None:
    request = predict_request("multi", {"ids": np.zeros([0], np.object_)})
    request.inputs["counts"].CopyFrom(tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64))
    request.inputs["counts"].tensor_shape.dim.add().size = 0
    request.inputs["counts"].tensor_shape.dim.add().size = 2**62
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: counts" in caught.value.details() and "is too large" in caught.value.details()
    assert_grpc_still_serving(stubs[0])


@pytest.mark.parametrize("flag", ["port", "rest_api_port"])
@pytest.mark.parametrize("value", ["-5", "65536", "70000"])
def test_a_port_out_of_range_is_a_usage_error_naming_the_flag(capsys: pytest.CaptureFixture[str], flag: str,
                                                              value: str) -> None:
    with pytest.raises(SystemExit) as caught:
        parse_options([f"--{flag}={value}"])
    assert caught.value.code == 2
    assert f"--{flag}" in capsys.readouterr().err


@pytest.mark.parametrize("value", [0, 65535])
def test_the_ports_at_the_ends_of_the_range_are_taken(value: int) -> None:
    options = parse_options([f"--port={value}", f"--rest_api_port={value}"])
    assert (options.port, options.rest_api_port) == (value, value)
