"""A small TF-Serving-like gRPC server for the client tests, built on the official protos.

It serves toy `retrieval` and `ranking` models whose scores are closed-form NumPy functions
(`retrieval_scores`, `ranking_logits`), checks every request the way TF Serving does (all
signature inputs present, dtypes and ranks right), records what it received, and can be
told to fail the next calls with a status code or to stall, so that retries, deadlines
and error mapping are tested deterministically over real gRPC on localhost.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import types
from collections.abc import Iterator
from concurrent import futures

import grpc
import numpy as np
import pytest

import trainer  # noqa: F401  (TensorFlow's environment, before TensorFlow loads)

# isort: split
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from recsys_common import contract

NUM_ITEMS = 40
RETRIEVAL_K = 10
ITEM_IDS = np.array([f"i{j}" for j in range(NUM_ITEMS)], dtype=object)
_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


def user_number(user_id: str) -> int:
    return sum(user_id.encode("utf-8")) % 97


def retrieval_scores(user_id: str, age: int, items: np.ndarray = ITEM_IDS) -> np.ndarray:
    """[M] float32 scores of `items` for one user."""
    index = np.array([int(item[1:]) for item in items])
    return (np.cos(index * 0.37 + user_number(user_id)) + 0.01 * age).astype(np.float32)


def ranking_logits(user_id: str, candidates: np.ndarray) -> np.ndarray:
    """[N] float32 logits; "" candidates get -10."""
    logits = [np.sin(int(item[1:]) * 1.3 + user_number(user_id)) if item else -10.0 for item in candidates]
    return np.asarray(logits, dtype=np.float32)


@dataclasses.dataclass
class ToyModel:
    name: str
    inputs: tuple[contract.TensorSpec, ...]
    outputs: tuple[contract.TensorSpec, ...]
    items: np.ndarray = dataclasses.field(default_factory=lambda: ITEM_IDS)


def toy_models() -> dict[str, ToyModel]:
    models = {
        contract.RETRIEVAL: ToyModel(contract.RETRIEVAL, contract.RETRIEVAL_INPUTS, contract.RETRIEVAL_OUTPUTS),
        contract.RANKING: ToyModel(contract.RANKING, contract.RANKING_INPUTS, contract.RANKING_OUTPUTS),
    }
    for shard in range(2):
        name = contract.shard_model_name(shard)
        models[name] = ToyModel(name, contract.RETRIEVAL_INPUTS, contract.RETRIEVAL_OUTPUTS, ITEM_IDS[shard::2])
    return models


class ToyServing(prediction_service_pb2_grpc.PredictionServiceServicer, model_service_pb2_grpc.ModelServiceServicer):
    """The servicer: Predict, GetModelMetadata and GetModelStatus over `toy_models()`."""

    def __init__(self, typed_fields: bool = False) -> None:
        self.models = toy_models()
        self.typed_fields = typed_fields
        self.requests: list[predict_pb2.PredictRequest] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self.deadlines: list[float] = []
        self.fail_next: collections.deque[grpc.StatusCode] = collections.deque()
        self.stall_seconds = 0.0
        self._lock = threading.Lock()

    def Predict(self, request, context):
        self._enter("Predict", context)
        self.requests.append(request)
        model = self._model(request.model_spec.name, context)
        inputs = self._checked_inputs(model, request, context)
        if contract.CANDIDATE_IDS in inputs:
            outputs = self._rank(inputs)
        else:
            outputs = self._retrieve(model, inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = model.name
        response.model_spec.version.value = 1
        for name, value in outputs.items():
            response.outputs[name].CopyFrom(self._tensor(value))
        return response

    def GetModelMetadata(self, request, context):
        self._enter("GetModelMetadata", context)
        model = self._model(request.model_spec.name, context)
        signature = meta_graph_pb2.SignatureDef(method_name="tensorflow/serving/predict")
        for spec, target in [(s, signature.inputs) for s in model.inputs] + [(s, signature.outputs)
                                                                              for s in model.outputs]:
            target[spec.name].name = f"{spec.name}:0"
            target[spec.name].dtype = _DTYPES[spec.dtype].as_datatype_enum
            for _ in range(spec.rank):
                target[spec.name].tensor_shape.dim.add(size=-1)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        signature_map.signature_def[contract.SIGNATURE_NAME].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = model.name
        response.metadata["signature_def"].Pack(signature_map)
        return response

    def GetModelStatus(self, request, context):
        self._enter("GetModelStatus", context)
        self._model(request.model_spec.name, context)
        response = get_model_status_pb2.GetModelStatusResponse()
        response.model_version_status.add(version=1, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
        return response

    def _enter(self, method: str, context) -> None:
        with self._lock:
            self.calls[method] += 1
            failure = self.fail_next.popleft() if self.fail_next else None
        remaining = context.time_remaining()
        self.deadlines.append(remaining if remaining is not None else float("inf"))
        if self.stall_seconds:
            time.sleep(self.stall_seconds)
        if failure is not None:
            context.abort(failure, f"injected {failure.name}")

    def _model(self, name: str, context) -> ToyModel:
        if name not in self.models:
            context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found for request: Latest({name})")
        return self.models[name]

    def _checked_inputs(self, model: ToyModel, request, context) -> dict[str, np.ndarray]:
        missing = sorted({spec.name for spec in model.inputs} - set(request.inputs))
        if missing:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"input size does not match signature: Missing but required: {missing}")
        inputs = {}
        for spec in model.inputs:
            tensor = request.inputs[spec.name]
            value = tf.make_ndarray(tensor)
            if tensor.dtype != _DTYPES[spec.dtype].as_datatype_enum or value.ndim != spec.rank:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad dtype or rank for {spec.name}")
            inputs[spec.name] = np.vectorize(bytes.decode, otypes=[object])(value) if spec.dtype == "string" else value
        return inputs

    def _retrieve(self, model: ToyModel, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scores = np.stack([retrieval_scores(u, a, model.items) for u, a in zip(inputs["user_id"], inputs["age"])])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :RETRIEVAL_K]
        return {
            contract.ITEM_IDS: model.items[top].astype(bytes),
            contract.SCORES: np.take_along_axis(scores, top, axis=1),
        }

    def _rank(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        logits = np.stack([ranking_logits(u, c) for u, c in zip(inputs["user_id"], inputs["candidate_ids"])])
        return {
            contract.SCORES: (1 / (1 + np.exp(-logits))).astype(np.float32),
            contract.EXPECTED_WATCH_TIME: (10 * np.exp(logits)).astype(np.float32),
        }

    def _tensor(self, value: np.ndarray):
        proto = tf.make_tensor_proto(value)
        if self.typed_fields and value.dtype == np.float32:
            proto.ClearField("tensor_content")
            proto.float_val.extend(value.reshape(-1).tolist())
        return proto


@dataclasses.dataclass
class RunningServer:
    target: str
    servicer: ToyServing


def _serve(typed_fields: bool) -> Iterator[RunningServer]:
    servicer = ToyServing(typed_fields=typed_fields)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield RunningServer(f"127.0.0.1:{port}", servicer)
    finally:
        server.stop(grace=None)


@pytest.fixture(params=[False, True], ids=["tensor_content", "typed_fields"])
def toy_server(request) -> Iterator[RunningServer]:
    """The toy server, answering with float outputs as tensor_content or as float_val."""
    yield from _serve(request.param)


@pytest.fixture
def toy_server_plain() -> Iterator[RunningServer]:
    yield from _serve(False)


def expected_recommendations(user_id: str, age: int, seen: list[str], k: int) -> list[tuple[str, float, float]]:
    """(item, score, expected watch time) computed straight from the toy models: top-K, minus seen, ranked."""
    scores = retrieval_scores(user_id, age)
    retrieved = ITEM_IDS[np.argsort(-scores, kind="stable")[:RETRIEVAL_K]]
    unseen = np.array([item for item in retrieved if item not in set(seen)], dtype=object)
    logits = ranking_logits(user_id, unseen)
    order = np.argsort(-logits, kind="stable")[:k]
    return [(unseen[i], float(1 / (1 + np.exp(-logits[i]))), float(10 * np.exp(logits[i]))) for i in order]


@pytest.fixture(scope="session")
def toy():
    """The toy models' NumPy reference, for expected values (test modules cannot import conftest)."""
    return types.SimpleNamespace(
        item_ids=ITEM_IDS, retrieval_k=RETRIEVAL_K, retrieval_scores=retrieval_scores, expected=expected_recommendations
    )


@pytest.fixture
def second_toy_server() -> Iterator[RunningServer]:
    yield from _serve(False)
