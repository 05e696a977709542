"""The request logic shared by the gRPC and REST front ends (TF Serving's ServerCore + servables).

Every call holds one model version (`ModelManager.acquire`) from the moment it is resolved
until its answer is built, so a version swap never fails it.
"""

from __future__ import annotations

import dataclasses
import time
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
from serving.errors import deadline_exceeded, invalid_argument, resource_exhausted
from serving.model_manager import ModelManager, Servable
from serving.session_model import DeclaredShapes, check_input_shapes
from serving.tensor_proto import TensorConversionError, decode_checked, decoded_size, to_tensor_proto

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


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server.

    Attributes:
        max_batch_size: the most rows (dimension 0 of the batched inputs, or tf.Examples) one request may carry
            (--max_request_batch_size).
        max_request_bytes: the largest request message, and the most bytes its tensors may take once decoded
            (--max_request_bytes).
    """

    max_batch_size: int = 8192
    max_request_bytes: int = 64 * 2**20

    def validate(self) -> None:
        """Raises ValueError naming the flag of the first limit below 1."""
        flags = {"max_batch_size": "--max_request_batch_size", "max_request_bytes": "--max_request_bytes"}
        for name, flag in flags.items():
            if getattr(self, name) < 1:
                raise ValueError(f"{flag} must be >= 1, got {getattr(self, name)}")


def time_left(deadline: float | None) -> float | None:
    """Seconds until a `time.monotonic()` deadline (None: none).

    Raises:
        ServingError: DEADLINE_EXCEEDED when it has passed.
    """
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    if left <= 0:
        raise deadline_exceeded("The request's deadline passed before it could run")
    return left


def check_batch(shapes: DeclaredShapes, inputs: Mapping[str, Any], max_batch_size: int) -> None:
    """One batch size across the inputs that the signature's `shapes` declare batch-major ([-1, ...]), within
    the cap.

    Raises:
        ServingError: INVALID_ARGUMENT naming the inputs that disagree on dimension 0;
            RESOURCE_EXHAUSTED naming an input whose batch is over `max_batch_size`.
    """
    sizes: dict[str, int] = {}
    for alias, value in inputs.items():
        declared = shapes.dims.get(alias)  # None: not in the signature, or of unknown rank
        shape = np.shape(value)
        if not declared or declared[0] != -1 or not shape:
            continue  # not batch-major
        sizes[alias] = int(shape[0])
    if len(set(sizes.values())) > 1:
        raise invalid_argument("The inputs disagree on the batch size (dimension 0): " +
                               ", ".join(f"'{alias}' has {size}" for alias, size in sorted(sizes.items())))
    for alias, size in sorted(sizes.items()):
        if size > max_batch_size:
            raise resource_exhausted(f"input '{alias}' has batch size {size}, over this server's limit of "
                                     f"{max_batch_size} (--max_request_batch_size)")


def decode_inputs(protos: Mapping[str, Any], max_bytes: int) -> dict[str, np.ndarray]:
    """The request tensors as arrays, each checked (and the total size capped) before any is allocated.

    Raises:
        ServingError: INVALID_ARGUMENT "tensor parsing error: <input> (...)" for a malformed tensor;
            RESOURCE_EXHAUSTED naming the input that takes the request over `max_bytes` once decoded.
    """
    total = 0
    for alias in sorted(protos):
        try:
            total += decoded_size(protos[alias], alias)
        except TensorConversionError as error:
            raise invalid_argument(f"tensor parsing error: {alias} ({error})") from error
        if total > max_bytes:
            shape = [dim.size for dim in protos[alias].tensor_shape.dim]
            raise resource_exhausted(f"input '{alias}' (shape {shape}) takes the request to {total} bytes once "
                                     f"decoded, over this server's limit of {max_bytes} (--max_request_bytes)")
    return {alias: decode_checked(proto, text=False) for alias, proto in protos.items()}


class ServingCore:
    """Predict, Classify, Regress, metadata and status over the manager's served versions."""

    def __init__(self, manager: ModelManager, batcher: BatchScheduler | None = None,
                 limits: RequestLimits | None = None) -> None:
        self.manager = manager
        self.batcher = batcher
        self.limits = limits or RequestLimits()

    def acquire(self, request: ModelRequest) -> Any:
        """Context manager holding the requested version (see ModelManager.acquire)."""
        return self.manager.acquire(request.name, request.version, request.label)

    def run_signature(self, servable: Servable, signature_name: str, inputs: Mapping[str, Any],
                      output_filter: Sequence[str] = (), deadline: float | None = None) -> dict[str, np.ndarray]:
        """Runs a signature on a held version (through the batch scheduler when batching is on), after
        checking each input's shape against the signature and that the batched inputs agree on one batch
        size within --max_batch_size.

        Args:
            servable: the held version.
            signature_name: the SignatureDef key ("" = serving_default).
            inputs: alias -> array, e.g. user_id [B] bytes.
            output_filter: output aliases to fetch (default all).
            deadline: the caller's `time.monotonic()` deadline; the run is cancelled when it passes.

        Raises:
            ServingError: the checks' INVALID_ARGUMENT / RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, or the run's error.
        """
        signature_name = signature_name or contract.SIGNATURE_NAME
        model = servable.model
        shapes = model.declared_shapes(signature_name)  # read from the SignatureDef once per version and signature
        check_input_shapes(shapes, inputs)
        check_batch(shapes, inputs, self.limits.max_batch_size)
        missing_or_extra = inputs.keys() != shapes.dims.keys()
        if self.batcher is None or missing_or_extra or any(np.ndim(value) == 0 for value in inputs.values()):
            return model.run(signature_name, inputs, output_filter, time_left(deadline))  # unbatchable: directly
        arrays = {name: np.asarray(value) for name, value in inputs.items()}
        key = (servable.name, servable.version, id(model), signature_name, tuple(output_filter))
        return self.batcher.run(key, arrays, lambda batch, left: model.run(signature_name, batch, output_filter, left),
                                deadline)

    def predict(self, request: predict_pb2.PredictRequest, deadline: float | None = None
                ) -> predict_pb2.PredictResponse:
        """gRPC Predict: tensors checked and decoded, the signature run, outputs encoded as TF Serving does."""
        inputs = decode_inputs(request.inputs, self.limits.max_request_bytes)
        with self.acquire(ModelRequest.from_spec(request.model_spec)) as servable:
            signature_name = request.model_spec.signature_name or contract.SIGNATURE_NAME
            outputs = self.run_signature(servable, signature_name, inputs, tuple(request.output_filter), deadline)
            response = predict_pb2.PredictResponse(model_spec=_response_spec(servable, signature_name))
        for alias, value in outputs.items():
            to_tensor_proto(value, out=response.outputs[alias], typed=True)
        return response

    def classify(self, request: classification_pb2.ClassificationRequest, deadline: float | None = None
                 ) -> classification_pb2.ClassificationResponse:
        """gRPC Classify: the request's tf.Examples through a classification signature."""
        spec, result = self._run_examples(request, classify_regress.classify, deadline)
        return classification_pb2.ClassificationResponse(model_spec=spec, result=result)

    def regress(self, request: regression_pb2.RegressionRequest, deadline: float | None = None
                ) -> regression_pb2.RegressionResponse:
        """gRPC Regress: the request's tf.Examples through a regression signature."""
        spec, result = self._run_examples(request, classify_regress.regress, deadline)
        return regression_pb2.RegressionResponse(model_spec=spec, result=result)

    def _run_examples(self, request: Any, handler: ExamplesHandler[Result], deadline: float | None
                      ) -> tuple[model_pb2.ModelSpec, Result]:
        """Runs a Classify or Regress request with `handler` on the version it asks for."""
        with self.acquire(ModelRequest.from_spec(request.model_spec)) as servable:
            name = request.model_spec.signature_name or contract.SIGNATURE_NAME

            def run(signature_name: str, inputs: Mapping[str, np.ndarray],
                    output_filter: tuple[str, ...]) -> dict[str, np.ndarray]:
                return self.run_signature(servable, signature_name, inputs, output_filter, deadline)

            result = handler(name, servable.model.signature_def(name), request.input, run)
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
