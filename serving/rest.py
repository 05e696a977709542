"""REST front end (stdlib http.server): TF Serving's /v1/models API and the Prometheus metrics page.

    POST /v1/models/<name>[/versions/<v> | /labels/<l>]:(predict|classify|regress)
    GET  /v1/models/<name>[/versions/<v> | /labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v> | /labels/<l>]/metadata   signature defs
    GET  <monitoring path>                                         Prometheus text (when configured)

Errors are {"error": "<message>"} with TF Serving's HTTP status for the canonical code.
"""

from __future__ import annotations

import http.server
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from tensorflow_serving.apis import classification_pb2, regression_pb2

from recsys_common import contract
from serving import json_codec
from serving.core import ModelRequest, ServingCore
from serving.errors import ServingError, http_status, internal, invalid_argument, not_found
from serving.monitoring import Metrics

LOG = logging.getLogger(__name__)
ENTRYPOINT = "REST"
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_API_BY_METHOD = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}


class RestServer(http.server.ThreadingHTTPServer):
    """A threading HTTP server that knows the serving core, the metrics and the metrics path."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], core: ServingCore, metrics: Metrics | None,
                 metrics_path: str | None) -> None:
        self.core = core
        self.metrics = metrics
        self.metrics_path = metrics_path
        super().__init__(address, RestHandler)


def _model_request(name: str, version: str | None, label: str | None) -> ModelRequest:
    name = urllib.parse.unquote(name)
    if version is not None and not version.isdigit():
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return ModelRequest(name, int(version) if version else None, urllib.parse.unquote(label) if label else None)


def predict(core: ServingCore, model: ModelRequest, body: bytes) -> dict[str, Any]:
    """A REST Predict: rows or columns in, the same format out."""
    document = json_codec.parse_document(body)
    signature_name = json_codec.signature_name_of(document)
    with core.acquire(model) as servable:
        name = signature_name or contract.SIGNATURE_NAME
        signatures = servable.model.meta_graph_def.signature_def
        if name not in signatures:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        inputs, request_format = json_codec.parse_predict(document, signatures[name].inputs)
        outputs = core.run_signature(servable, name, inputs)
    return json_codec.predict_response(outputs, request_format)


def _examples_request(request: Any, model: ModelRequest, body: bytes, method: str) -> None:
    document = json_codec.parse_document(body)
    request.model_spec.CopyFrom(model.to_spec(json_codec.signature_name_of(document)))
    request.input.CopyFrom(json_codec.parse_examples(document, method))


def classify(core: ServingCore, model: ModelRequest, body: bytes) -> dict[str, Any]:
    request = classification_pb2.ClassificationRequest()
    _examples_request(request, model, body, "classify")
    return json_codec.classification_response(core.classify(request).result)


def regress(core: ServingCore, model: ModelRequest, body: bytes) -> dict[str, Any]:
    request = regression_pb2.RegressionRequest()
    _examples_request(request, model, body, "regress")
    return json_codec.regression_response(core.regress(request).result)


_POST_HANDLERS: dict[str, Callable[[ServingCore, ModelRequest, bytes], dict[str, Any]]] = {
    "predict": predict, "classify": classify, "regress": regress}


class RestHandler(http.server.BaseHTTPRequestHandler):
    """One HTTP request; never lets an exception escape (the server keeps serving)."""

    protocol_version = "HTTP/1.1"
    server: RestServer

    def log_message(self, format: str, *args: Any) -> None:
        LOG.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if self.server.metrics_path is not None and path == self.server.metrics_path:
            assert self.server.metrics is not None
            self._send(HTTPStatus.OK, self.server.metrics.render().encode("utf-8"), "text/plain; version=0.0.4")
            return
        match = _STATUS_PATH.fullmatch(path)
        if match is None:
            self._malformed("GET", path)
            return
        name, version, label, metadata = match.groups()
        api = "GetModelMetadata" if metadata else "GetModelStatus"

        def handle() -> dict[str, Any]:
            if not name:
                raise invalid_argument("Missing model name in request.")
            model = _model_request(name, version, label)
            return self.server.core.metadata_json(model) if metadata else self.server.core.status_json(model)

        self._answer(api, urllib.parse.unquote(name or ""), handle)

    def do_POST(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        match = _PREDICTION_PATH.fullmatch(path)
        try:
            body = self._read_body()
        except ServingError as error:
            self._send_error(error)
            return
        if match is None:
            self._malformed("POST", path)
            return
        name, version, label, method = match.groups()
        method = method.lower()
        self._answer(_API_BY_METHOD[method], urllib.parse.unquote(name),
                     lambda: _POST_HANDLERS[method](self.server.core, _model_request(name, version, label), body))

    def _malformed(self, method: str, path: str) -> None:
        if not path.lower().startswith("/v1/"):
            self._send_error(not_found(f"No handler for {method} {path}"))
        else:
            self._send_error(invalid_argument(f"Malformed request: {method} {path}"))

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            raise invalid_argument(f"Invalid Content-Length: {length}")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        chunks: list[bytes] = []
        while True:
            size_line = self.rfile.readline().split(b";")[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError as error:
                raise invalid_argument("Malformed chunked request body") from error
            if size == 0:
                while self.rfile.readline().strip():
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _answer(self, api: str, model_name: str, handle: Callable[[], dict[str, Any]]) -> None:
        started = time.perf_counter()
        status = "OK"
        try:
            body = json_codec.dumps(handle())
        except ServingError as error:
            status = error.code_name
            self._send_error(error)
        except Exception as error:  # answered as INTERNAL and logged: the server keeps serving
            LOG.exception("REST %s on model %s failed", api, model_name)
            status = "INTERNAL"
            self._send_error(internal(f"{type(error).__name__}: {error}"))
        else:
            self._send(HTTPStatus.OK, body)
        finally:
            if self.server.metrics is not None:
                self.server.metrics.record_request(model_name, api, ENTRYPOINT, status, time.perf_counter() - started)

    def _send_error(self, error: ServingError) -> None:
        self._send(http_status(error.code), json_codec.dumps({"error": error.message}))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
