"""Conformance with TF Serving's own test models and answers (../shared/data/tf_serving_testdata)."""

from __future__ import annotations

import json
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from server_test_models import HALF_PLUS_TWO_METADATA, TESTDATA, predict_request, require_testdata
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    input_pb2,
    model_pb2,
    regression_pb2,
)

from serving.testing import ServerProcess

pytestmark = pytest.mark.usefixtures("testdata")


@pytest.fixture(scope="module")
def testdata() -> None:
    require_testdata()


def x_examples(*values: float) -> input_pb2.Input:
    examples = [example_pb2.Example(features=feature_pb2.Features(
        feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[value]))})) for value in values]
    return input_pb2.Input(example_list=input_pb2.ExampleList(examples=examples))


def test_grpc_predict_half_plus_two(stubs: tuple[Any, Any]) -> None:
    response = stubs[0].Predict(predict_request("default", {"x": np.array([2.0], np.float32)}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [3.0])
    assert response.model_spec.name == "default"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.parametrize(("body", "expected"), [
    ({"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    ({"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    ({"signature_name": "serving_default", "instances": [[2.0], [5.0]]}, {"predictions": [[3.0], [4.5]]}),
])
def test_rest_predict_half_plus_two(main_server: ServerProcess, body: dict, expected: dict) -> None:
    assert main_server.post_json("/v1/models/default:predict", body) == (200, expected)


@pytest.mark.parametrize("path", ["/v1/models/default/versions/123:predict", "/V1/Models/default:PREDICT"])
def test_rest_predict_paths(main_server: ServerProcess, path: str) -> None:
    assert main_server.post_json(path, {"instances": [2.0]}) == (200, {"predictions": [3.0]})


def test_grpc_classify_and_regress(stubs: tuple[Any, Any]) -> None:
    spec = model_pb2.ModelSpec(name="default", signature_name="classify_x_to_y")
    classified = stubs[0].Classify(classification_pb2.ClassificationRequest(model_spec=spec, input=x_examples(2.0)))
    assert [c.score for c in classified.result.classifications[0].classes] == [3.0]
    spec = model_pb2.ModelSpec(name="default", signature_name="regress_x_to_y")
    regressed = stubs[0].Regress(regression_pb2.RegressionRequest(model_spec=spec, input=x_examples(2.0, 4.0)))
    assert [r.value for r in regressed.result.regressions] == [3.0, 4.0]
    assert regressed.model_spec.version.value == 123


def test_grpc_regress_with_context(stubs: tuple[Any, Any]) -> None:
    context = example_pb2.Example(features=feature_pb2.Features(
        feature={"x": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[10.0]))}))
    request_input = input_pb2.Input(example_list_with_context=input_pb2.ExampleListWithContext(
        context=context, examples=[example_pb2.Example(), x_examples(2.0).example_list.examples[0]]))
    spec = model_pb2.ModelSpec(name="default", signature_name="regress_x_to_y")
    regressed = stubs[0].Regress(regression_pb2.RegressionRequest(model_spec=spec, input=request_input))
    # The first example takes x from the context (0.5 * 10 + 2), the second overrides it (0.5 * 2 + 2).
    assert [r.value for r in regressed.result.regressions] == [7.0, 3.0]


@pytest.mark.parametrize(("method", "signature", "expected"), [
    ("classify", "classify_x_to_y", {"results": [[["", 3.0]]]}),
    ("regress", "regress_x_to_y", {"results": [3.0]}),
])
def test_rest_classify_and_regress(main_server: ServerProcess, method: str, signature: str, expected: dict) -> None:
    body = {"signature_name": signature, "examples": [{"x": 2.0}]}
    assert main_server.post_json(f"/v1/models/default:{method}", body) == (200, expected)


def test_model_status_version_123_available(main_server: ServerProcess, stubs: tuple[Any, Any]) -> None:
    status, body = main_server.get_json("/v1/models/default")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    request = get_model_status_pb2.GetModelStatusRequest(model_spec=model_pb2.ModelSpec(name="default"))
    response = stubs[1].GetModelStatus(request)
    assert [(v.version, v.state) for v in response.model_version_status] == [
        (123, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]


def test_rest_metadata_equals_tf_servings_file(main_server: ServerProcess) -> None:
    expected = json.loads(HALF_PLUS_TWO_METADATA.read_text())
    assert main_server.get_json("/v1/models/default/metadata") == (200, expected)


def test_grpc_metadata_matches_the_rest_file(stubs: tuple[Any, Any]) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=model_pb2.ModelSpec(name="default"),
                                                             metadata_field=["signature_def"])
    response = stubs[0].GetModelMetadata(request)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    expected = json.loads(HALF_PLUS_TWO_METADATA.read_text())["metadata"]["signature_def"]
    assert json_format.MessageToDict(signatures, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True) == expected
    assert response.model_spec.version.value == 123


def test_unknown_model_is_not_found(main_server: ServerProcess, stubs: tuple[Any, Any]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(predict_request("nope", {"x": np.array([2.0], np.float32)}))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert caught.value.details() == "Servable not found for request: Latest(nope)"
    assert main_server.post_json("/v1/models/nope:predict", {"instances": [2.0]}) == (
        404, {"error": "Servable not found for request: Latest(nope)"})


def test_tf2_half_plus_two(main_server: ServerProcess, stubs: tuple[Any, Any]) -> None:
    response = stubs[0].Predict(predict_request("half_plus_two_tf2", {"x": np.array([2.0], np.float32)}))
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [3.0])
    assert main_server.post_json("/v1/models/half_plus_two_tf2:predict", {"instances": [2.0, 4.0]}) == (
        200, {"predictions": [3.0, 4.0]})
    expected = json.loads((TESTDATA / "saved_model_half_plus_two_tf2_2_versions_metadata.json").read_text())
    status, body = main_server.get_json("/v1/models/half_plus_two_tf2/metadata")
    assert status == 200
    # The stored file predates the signature `defaults` of this export: compare everything else.
    def without_defaults(metadata: dict) -> dict:
        return {key: {part: signature.get(part) for part in ("inputs", "outputs", "method_name")}
                for key, signature in metadata["signature_def"]["signature_def"].items()}

    assert without_defaults(body["metadata"]) == without_defaults(expected["metadata"])
