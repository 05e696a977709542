"""gRPC front end: tensorflow.serving.PredictionService and ModelService with the official protos."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent import futures
from typing import Any, TypeVar

import grpc
from tensorflow_serving.apis import (
    model_management_pb2,
    model_service_pb2_grpc,
    prediction_service_pb2_grpc,
)

from serving._protos.tensorflow_serving.config import ssl_config_pb2
from serving.core import ServingCore
from serving.errors import ServingError, invalid_argument, permission_denied, unimplemented
from serving.model_config import ConfigError, models_from_proto
from serving.monitoring import Metrics

LOG = logging.getLogger(__name__)
ENTRYPOINT = "GRPC"
# Responses may be large (e.g. long candidate lists); gRPC's 4 MB default is too small for them.
MAX_SEND_MESSAGE_BYTES = 2**31 - 1
RELOAD_FLAG = "--enable_model_reload"
Response = TypeVar("Response")
# A gRPC deadline further away than this is no deadline (some stacks report "none" as a huge number).
_NO_DEADLINE_S = 10 * 365 * 24 * 3600


def request_deadline(context: grpc.ServicerContext) -> float | None:
    """The RPC's deadline as a `time.monotonic()` time (None when the caller set none)."""
    remaining = context.time_remaining()
    if remaining is None or remaining > _NO_DEADLINE_S:
        return None
    return time.monotonic() + max(0.0, remaining)


def _call(metrics: Metrics | None, api: str, model_name: str, context: grpc.ServicerContext,
          handler: Callable[[], Response]) -> Response:
    """Runs a handler; a ServingError becomes the RPC status, anything else INTERNAL (never a crash)."""
    started = time.perf_counter()
    code, message = grpc.StatusCode.OK, ""
    try:
        return handler()
    except ServingError as error:
        code, message = error.code, error.message
    except Exception as error:  # reported to the caller as INTERNAL, logged with its traceback
        LOG.exception("%s on model %s failed", api, model_name)
        code, message = grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {error}"
    finally:
        if metrics is not None:
            metrics.record_request(model_name, api, ENTRYPOINT, str(code.name), time.perf_counter() - started)
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict, Classify, Regress and GetModelMetadata."""

    def __init__(self, core: ServingCore, metrics: Metrics | None = None) -> None:
        self._core = core
        self._metrics = metrics

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:
        deadline = request_deadline(context)
        return _call(self._metrics, "Predict", request.model_spec.name, context,
                     lambda: self._core.predict(request, deadline))

    def Classify(self, request: Any, context: grpc.ServicerContext) -> Any:
        deadline = request_deadline(context)
        return _call(self._metrics, "Classify", request.model_spec.name, context,
                     lambda: self._core.classify(request, deadline))

    def Regress(self, request: Any, context: grpc.ServicerContext) -> Any:
        deadline = request_deadline(context)
        return _call(self._metrics, "Regress", request.model_spec.name, context,
                     lambda: self._core.regress(request, deadline))

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _call(self._metrics, "GetModelMetadata", request.model_spec.name, context,
                     lambda: self._core.metadata(request))

    def MultiInference(self, request: Any, context: grpc.ServicerContext) -> Any:
        def multi_inference() -> Any:
            raise unimplemented("MultiInference is not implemented by this server")

        return _call(self._metrics, "MultiInference", "", context, multi_inference)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest (refused unless the server runs with --enable_model_reload:
    a reload unloads every model and loads SavedModels from any path the server can read)."""

    def __init__(self, core: ServingCore, metrics: Metrics | None = None, enable_reload: bool = False) -> None:
        self._core = core
        self._metrics = metrics
        self._enable_reload = enable_reload

    def GetModelStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
        return _call(self._metrics, "GetModelStatus", request.model_spec.name, context,
                     lambda: self._core.status(request))

    def HandleReloadConfigRequest(self, request: Any, context: grpc.ServicerContext) -> Any:
        def reload() -> model_management_pb2.ReloadConfigResponse:
            if not self._enable_reload:
                raise permission_denied(f"HandleReloadConfigRequest is disabled on this server; start it with "
                                        f"{RELOAD_FLAG} to allow callers to replace the served models")
            try:
                models = models_from_proto(request.config)
            except ConfigError as error:
                raise invalid_argument(str(error)) from error
            self._core.manager.reload(models)
            return model_management_pb2.ReloadConfigResponse()

        return _call(self._metrics, "HandleReloadConfigRequest", "", context, reload)


def server_credentials(config: ssl_config_pb2.SSLConfig) -> grpc.ServerCredentials:
    """TLS credentials from an SSLConfig, as TF Serving builds them: the key and certificate chain, and with
    client_verify a client certificate signed by custom_ca is required (mutual TLS)."""
    return grpc.ssl_server_credentials(
        [(config.server_key.encode("utf-8"), config.server_cert.encode("utf-8"))],
        root_certificates=config.custom_ca.encode("utf-8") if config.custom_ca else None,
        require_client_auth=config.client_verify)


def create_grpc_server(core: ServingCore, address: str, max_workers: int, metrics: Metrics | None = None, *,
                       credentials: grpc.ServerCredentials | None = None,
                       enable_model_reload: bool = False) -> tuple[grpc.Server, int]:
    """A started-ready (not yet started) gRPC server bound to `address` ("host:port").

    Args:
        core: answers the calls.
        address: "host:port" (port 0 picks a free one).
        max_workers: threads answering calls.
        metrics: request counts and latencies (None: none recorded).
        credentials: TLS credentials (`server_credentials`); None listens without TLS.
        enable_model_reload: whether HandleReloadConfigRequest may replace the served models.

    Returns:
        The server and the port it bound (useful with port 0).

    Raises:
        RuntimeError: when the address cannot be bound.
    """
    # A larger request fails in gRPC itself with RESOURCE_EXHAUSTED, before it is parsed.
    options = [("grpc.max_receive_message_length", core.limits.max_request_bytes),
               ("grpc.max_send_message_length", MAX_SEND_MESSAGE_BYTES),
               ("grpc.so_reuseport", 0)]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
                         options=options)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(core, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        ModelService(core, metrics, enable_model_reload), server)
    try:
        port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError as error:
        raise RuntimeError(f"Cannot bind the gRPC server to {address}: {error}") from error
    if port == 0:
        raise RuntimeError(f"Cannot bind the gRPC server to {address}")
    return server, port
