"""The request logic shared by the gRPC and REST front ends (TF Serving's ServerCore + servables).

Every call holds one model version (`ModelManager.acquire`) from the moment it is resolved
until its answer is built, so a version swap never fails it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from recsys_common import contract
from serving import classify_regress
from serving.batching import BatchScheduler
from serving.errors import invalid_argument
from serving.model_manager import ModelManager, Servable
from serving.tensor_codec import from_tensor_proto, to_tensor_proto

Result = TypeVar("Result")
# classify_regress.classify / regress: (signature name, SignatureDef, tf.Examples, run) -> result proto.
ExamplesHandler = Callable[[str, Any, Any, classify_regress.RunSignature], Result]


@dataclasses.dataclass(frozen=True)
class ModelRequest:
    """Which model version a request asks for: a version number, a label, or (neither) the latest."""

    name: str
    version: int | None = None
    label: str | None = None

    @classmethod
    def from_spec(cls, spec: model_pb2.ModelSpec) -> ModelRequest:
        choice = spec.WhichOneof("version_choice")
        return cls(spec.name, spec.version.value if choice == "version" else None,
                   spec.version_label if choice == "version_label" else None)

    def to_spec(self, signature_name: str = "") -> model_pb2.ModelSpec:
        """The ModelSpec that asks for this version (the inverse of `from_spec`)."""
        spec = model_pb2.ModelSpec(name=self.name, signature_name=signature_name)
        if self.version is not None:
            spec.version.value = self.version
        elif self.label:
            spec.version_label = self.label
        return spec


def _response_spec(servable: Servable, signature_name: str = "") -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=servable.name, signature_name=signature_name)
    spec.version.value = servable.version
    return spec


def _dict(message: Any) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


class ServingCore:
    """Predict, Classify, Regress, metadata and status over the manager's served versions."""

    def __init__(self, manager: ModelManager, batcher: BatchScheduler | None = None) -> None:
        self.manager = manager
        self.batcher = batcher

    def acquire(self, request: ModelRequest) -> Any:
        """Context manager holding the requested version (see ModelManager.acquire)."""
        return self.manager.acquire(request.name, request.version, request.label)

    def run_signature(self, servable: Servable, signature_name: str, inputs: Mapping[str, Any],
                      output_filter: Sequence[str] = ()) -> dict[str, np.ndarray]:
        """Runs a signature on a held version, through the batch scheduler when batching is on.

        Args:
            servable: the held version.
            signature_name: the SignatureDef key ("" = serving_default).
            inputs: alias -> array, e.g. user_id [B] bytes.
            output_filter: output aliases to fetch (default all).
        """
        signature_name = signature_name or contract.SIGNATURE_NAME
        if self.batcher is None:
            return servable.model.run(signature_name, inputs, output_filter)
        model = servable.model
        signature = model.signature_def(signature_name)
        missing_or_extra = set(inputs) != set(signature.inputs)
        if missing_or_extra or any(np.ndim(value) == 0 for value in inputs.values()):
            return model.run(signature_name, inputs, output_filter)  # invalid or unbatchable: answer it directly
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        key = (servable.name, servable.version, id(model), signature_name, tuple(output_filter))
        return self.batcher.run(key, arrays, lambda batch: model.run(signature_name, batch, output_filter))

    def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        """gRPC Predict: tensors decoded, the signature run, outputs encoded as TF Serving does."""
        inputs = {alias: from_tensor_proto(proto, alias) for alias, proto in request.inputs.items()}
        with self.acquire(ModelRequest.from_spec(request.model_spec)) as servable:
            signature_name = request.model_spec.signature_name or contract.SIGNATURE_NAME
            outputs = self.run_signature(servable, signature_name, inputs, tuple(request.output_filter))
            response = predict_pb2.PredictResponse(model_spec=_response_spec(servable, signature_name))
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(to_tensor_proto(value))
        return response

    def classify(self, request: classification_pb2.ClassificationRequest) -> classification_pb2.ClassificationResponse:
        """gRPC Classify: the request's tf.Examples through a classification signature."""
        spec, result = self._run_examples(request, classify_regress.classify)
        return classification_pb2.ClassificationResponse(model_spec=spec, result=result)

    def regress(self, request: regression_pb2.RegressionRequest) -> regression_pb2.RegressionResponse:
        """gRPC Regress: the request's tf.Examples through a regression signature."""
        spec, result = self._run_examples(request, classify_regress.regress)
        return regression_pb2.RegressionResponse(model_spec=spec, result=result)

    def _run_examples(self, request: Any, handler: ExamplesHandler[Result]) -> tuple[model_pb2.ModelSpec, Result]:
        """Runs a Classify or Regress request with `handler` on the version it asks for."""
        with self.acquire(ModelRequest.from_spec(request.model_spec)) as servable:
            name = request.model_spec.signature_name or contract.SIGNATURE_NAME
            result = handler(name, servable.model.signature_def(name), request.input,
                             functools.partial(self.run_signature, servable))
            return _response_spec(servable, name), result

    def metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                 ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        """GetModelMetadata: the SignatureDefMap of the version (the only metadata TF Serving serves)."""
        fields = list(request.metadata_field)
        if not fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in fields:
            if field != contract.SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        spec, signature_map = self._signature_def_map(ModelRequest.from_spec(request.model_spec))
        response = get_model_metadata_pb2.GetModelMetadataResponse(model_spec=spec)
        response.metadata[contract.SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    def metadata_json(self, request: ModelRequest) -> dict[str, Any]:
        """The REST metadata body: {"model_spec": {...}, "metadata": {"signature_def": {...}}}."""
        spec, signature_map = self._signature_def_map(request)
        return {"model_spec": _dict(spec), "metadata": {contract.SIGNATURE_DEF_FIELD: _dict(signature_map)}}

    def _signature_def_map(self, request: ModelRequest
                           ) -> tuple[model_pb2.ModelSpec, get_model_metadata_pb2.SignatureDefMap]:
        """The version's ModelSpec and its SignatureDefs (what GetModelMetadata packs, REST prints)."""
        with self.acquire(request) as servable:
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature in servable.model.meta_graph_def.signature_def.items():
                signature_map.signature_def[key].CopyFrom(signature)
            return _response_spec(servable), signature_map

    def status(self, request: get_model_status_pb2.GetModelStatusRequest
               ) -> get_model_status_pb2.GetModelStatusResponse:
        """GetModelStatus: each version's state and last error (labels resolve to their version)."""
        if not request.HasField("model_spec"):
            raise invalid_argument("Missing ModelSpec")
        return self._status(ModelRequest.from_spec(request.model_spec))

    def status_json(self, request: ModelRequest) -> dict[str, Any]:
        """The REST status body: {"model_version_status": [{"version", "state", "status"}]}."""
        return _dict(self._status(request))

    def _status(self, model: ModelRequest) -> get_model_status_pb2.GetModelStatusResponse:
        version = model.version
        if model.label:
            version = self.manager.resolve_version(model.name, label=model.label)
        return get_model_status_pb2.GetModelStatusResponse(
            model_version_status=self.manager.status(model.name, version))
