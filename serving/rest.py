"""REST front end: TF Serving's /v1/models API and the Prometheus metrics page, served by waitress.

    POST /v1/models/<name>[/versions/<v> | /labels/<l>]:(predict|classify|regress)
    GET  /v1/models/<name>[/versions/<v> | /labels/<l>]            model status
    GET  /v1/models/<name>[/versions/<v> | /labels/<l>]/metadata   signature defs
    GET  <monitoring path>                                         Prometheus text (when configured)

Errors are {"error": "<message>"} with TF Serving's HTTP status for the canonical code.

waitress (a pure-Python WSGI server) does the HTTP: a listen backlog of 1024, requests read
in full by its I/O thread before a worker thread sees them (a slow sender holds a socket, never
a thread), connections idle longer than the timeout closed, a body over the cap refused with
413 from its Content-Length alone, and at most `num_threads` requests worked on at a time.
The same timeout bounds a request's run once its body is in (504 DEADLINE_EXCEEDED), as TF
Serving's --rest_api_timeout_in_ms does.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

import waitress
from tensorflow_serving.apis import classification_pb2, regression_pb2
from waitress import wasyncore
from waitress.server import BaseWSGIServer

from recsys_common import contract
from serving import json_codec
from serving.core import ModelRequest, ServingCore
from serving.errors import ServingError, http_status, internal, invalid_argument, not_found
from serving.model_config import ConfigError
from serving.monitoring import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.monitoring import Metrics

LOG = logging.getLogger(__name__)
ENTRYPOINT = "REST"
JSON_CONTENT_TYPE = "application/json"
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)", re.IGNORECASE)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?", re.IGNORECASE)
_API_BY_METHOD = {"predict": "Predict", "classify": "Classify", "regress": "Regress"}
_MAX_VERSION = 2**63 - 1
Response = tuple[int, bytes, str]  # HTTP status, body, Content-Type


@dataclasses.dataclass(frozen=True)
class RestOptions:
    """Limits of the REST listener.

    Attributes:
        num_threads: requests worked on at once (TF Serving's --rest_api_num_threads; 0: 4 per CPU).
        timeout_s: TF Serving's --rest_api_timeout_in_ms: how long a request may run once its body is in
            (504 DEADLINE_EXCEEDED after), and how long a connection may send or receive nothing before
            it is closed (waitress counts whole seconds).
        max_request_bytes: the largest request body accepted; a larger one gets 413.
        backlog: connections the kernel queues before the server accepts them.
        connection_limit: open connections at once; further ones wait in the backlog.
    """

    num_threads: int = 0
    timeout_s: float = 30.0
    max_request_bytes: int = 32 * 2**20
    backlog: int = 1024
    connection_limit: int = 1000

    @classmethod
    def from_flags(cls, num_threads: int, timeout_in_ms: int, max_request_bytes: int) -> RestOptions:
        """The options of --rest_api_num_threads, --rest_api_timeout_in_ms and --rest_api_max_request_bytes.

        Raises:
            ConfigError: naming the flag whose value cannot be used.
        """
        for flag, value, low in (("rest_api_num_threads", num_threads, 0), ("rest_api_timeout_in_ms", timeout_in_ms, 1),
                                 ("rest_api_max_request_bytes", max_request_bytes, 1)):
            if value < low:
                raise ConfigError(f"--{flag} must be at least {low}, got {value}")
        return cls(num_threads, timeout_in_ms / 1000, max_request_bytes)

    def threads(self) -> int:
        return self.num_threads if self.num_threads > 0 else 4 * (os.cpu_count() or 1)

    def waitress_settings(self) -> dict[str, Any]:
        """The waitress adjustments that enforce these limits."""
        timeout = max(1, math.ceil(self.timeout_s))
        return {"threads": self.threads(), "backlog": self.backlog, "connection_limit": self.connection_limit,
                "channel_timeout": timeout, "cleanup_interval": max(1, min(30, timeout // 2)),
                # waitress refuses a body of max_request_body_size bytes or more
                "max_request_body_size": self.max_request_bytes + 1,
                "asyncore_use_poll": True,  # select() stops at 1024 file descriptors
                "ident": "serving.server", "expose_tracebacks": False}


def _model_request(name: str, version: str | None, label: str | None) -> ModelRequest:
    name = urllib.parse.unquote(name)
    if version is not None and (not version.isdigit() or int(version) > _MAX_VERSION):
        raise invalid_argument(f"Failed to convert version: {version} to numeric.")
    return ModelRequest(name, int(version) if version else None, urllib.parse.unquote(label) if label else None)


def predict(core: ServingCore, model: ModelRequest, body: bytes, deadline: float | None = None) -> dict[str, Any]:
    """A REST Predict: rows or columns in, the same format out; the run is cancelled at `deadline`
    (a `time.monotonic()` time)."""
    document = json_codec.parse_document(body)
    signature_name = json_codec.signature_name_of(document)
    with core.acquire(model) as servable:
        name = signature_name or contract.SIGNATURE_NAME
        signatures = servable.model.meta_graph_def.signature_def
        if name not in signatures:
            raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
        json_codec.check_rows(document, signatures[name].inputs, core.limits.max_batch_size)
        inputs, request_format = json_codec.parse_predict(document, signatures[name].inputs)
        outputs = core.run_signature(servable, name, inputs, deadline=deadline)
    return json_codec.predict_response(outputs, request_format)


def _examples_request(request: Any, model: ModelRequest, body: bytes, method: str, max_rows: int) -> None:
    document = json_codec.parse_document(body)
    json_codec.check_rows(document, None, max_rows)
    request.model_spec.CopyFrom(model.to_spec(json_codec.signature_name_of(document)))
    request.input.CopyFrom(json_codec.parse_examples(document, method))


def classify(core: ServingCore, model: ModelRequest, body: bytes, deadline: float | None = None) -> dict[str, Any]:
    request = classification_pb2.ClassificationRequest()
    _examples_request(request, model, body, "classify", core.limits.max_batch_size)
    return json_codec.classification_response(core.classify(request, deadline).result)


def regress(core: ServingCore, model: ModelRequest, body: bytes, deadline: float | None = None) -> dict[str, Any]:
    request = regression_pb2.RegressionRequest()
    _examples_request(request, model, body, "regress", core.limits.max_batch_size)
    return json_codec.regression_response(core.regress(request, deadline).result)


_POST_HANDLERS: dict[str, Callable[[ServingCore, ModelRequest, bytes, float | None], dict[str, Any]]] = {
    "predict": predict, "classify": classify, "regress": regress}


def _error(error: ServingError) -> Response:
    return http_status(error.code), json_codec.dumps({"error": error.message}), JSON_CONTENT_TYPE


def _malformed(method: str, path: str) -> Response:
    if not path.lower().startswith("/v1/"):
        return _error(not_found(f"No handler for {method} {path}"))
    return _error(invalid_argument(f"Malformed request: {method} {path}"))


class RestApp:
    """The WSGI application: routes one request; never lets an exception escape (the server keeps serving).

    Args:
        timeout_s: how long a Predict, Classify or Regress may run once its body is in (TF Serving's
            --rest_api_timeout_in_ms); None: no limit.
    """

    def __init__(self, core: ServingCore, metrics: Metrics | None, metrics_path: str | None,
                 timeout_s: float | None = None) -> None:
        self.core = core
        self.metrics = metrics
        self.metrics_path = metrics_path
        self.timeout_s = timeout_s

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        status, body, content_type = self.respond(environ)
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    def respond(self, environ: dict[str, Any]) -> Response:
        """The answer to one request (its body already read in full by the server, within the size cap)."""
        method = environ["REQUEST_METHOD"]
        # The raw target, so that an escaped "/" or ":" stays inside the model name it belongs to.
        path = urllib.parse.urlsplit(environ.get("REQUEST_URI") or environ.get("PATH_INFO", "")).path
        if method == "GET":
            if self.metrics_path is not None and path == self.metrics_path and self.metrics is not None:
                return HTTPStatus.OK, self.metrics.render().encode("utf-8"), METRICS_CONTENT_TYPE
            return self._get(path)
        if method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)  # waitress has checked it is digits
            return self._post(path, environ["wsgi.input"].read(length))
        return _malformed(method, path)

    def _get(self, path: str) -> Response:
        match = _STATUS_PATH.fullmatch(path)
        if match is None:
            return _malformed("GET", path)
        name, version, label, metadata = match.groups()
        api = "GetModelMetadata" if metadata else "GetModelStatus"

        def handle() -> dict[str, Any]:
            if not name:
                raise invalid_argument("Missing model name in request.")
            model = _model_request(name, version, label)
            return self.core.metadata_json(model) if metadata else self.core.status_json(model)

        return self._answer(api, urllib.parse.unquote(name or ""), handle)

    def _post(self, path: str, body: bytes) -> Response:
        match = _PREDICTION_PATH.fullmatch(path)
        if match is None:
            return _malformed("POST", path)
        name, version, label, method = match.groups()
        handler = _POST_HANDLERS[method.lower()]
        deadline = None if self.timeout_s is None else time.monotonic() + self.timeout_s
        return self._answer(_API_BY_METHOD[method.lower()], urllib.parse.unquote(name),
                            lambda: handler(self.core, _model_request(name, version, label), body, deadline))

    def _answer(self, api: str, model_name: str, handle: Callable[[], dict[str, Any]]) -> Response:
        started = time.perf_counter()
        status = "OK"
        try:
            return HTTPStatus.OK, json_codec.dumps(handle()), JSON_CONTENT_TYPE
        except ServingError as error:
            status = error.code_name
            return _error(error)
        except Exception as error:  # answered as INTERNAL and logged: the server keeps serving
            LOG.exception("REST %s on model %s failed", api, model_name)
            status = "INTERNAL"
            return _error(internal(f"{type(error).__name__}: {error}"))
        finally:
            if self.metrics is not None:
                self.metrics.record_request(model_name, api, ENTRYPOINT, status, time.perf_counter() - started)


class RestServer:
    """The REST listener: `RestApp` on a waitress server bound to `address` (port 0 picks a free one).

    Raises:
        OSError: when the address cannot be bound.
    """

    def __init__(self, address: tuple[str, int], core: ServingCore, metrics: Metrics | None,
                 metrics_path: str | None, options: RestOptions | None = None) -> None:
        host, port = address
        self.options = options or RestOptions()
        self._map: dict[int, Any] = {}
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        app = RestApp(core, metrics, metrics_path, self.options.timeout_s)
        self._server = waitress.create_server(app, map=self._map, listen=listen, **self.options.waitress_settings())
        sockets = [d for d in self._map.values() if isinstance(d, BaseWSGIServer)]
        self.server_address: tuple[str, int] = (host, int(sockets[0].socket.getsockname()[1]))
        self._running = threading.Event()
        self._stopped = threading.Event()

    def serve_forever(self) -> None:
        """Runs the I/O loop until `shutdown` (call it in a thread of its own)."""
        self._running.set()
        try:
            self._server.run()
        finally:
            self._stopped.set()

    def shutdown(self, grace_seconds: float = 5.0) -> None:
        """Stops accepting, lets requests being worked on finish (up to the grace period), closes every
        connection and waits for `serve_forever` to return."""
        if not self._running.is_set():
            self._close_all()
            return
        trigger = next(d for d in self._map.values() if isinstance(d, BaseWSGIServer)).trigger
        trigger.pull_trigger(self._stop_accepting)  # the I/O thread owns the sockets
        self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=grace_seconds)
        trigger.pull_trigger(self._close_all)
        if not self._stopped.wait(grace_seconds + 5.0):
            LOG.warning("The REST I/O loop did not stop in time")

    def _stop_accepting(self) -> None:
        for dispatcher in list(self._map.values()):
            if isinstance(dispatcher, BaseWSGIServer):
                wasyncore.dispatcher.close(dispatcher)  # the listening socket only: the trigger stays

    def _close_all(self) -> None:
        wasyncore.close_all(self._map, ignore_all=True)
        if not self._running.is_set():
            self._server.task_dispatcher.shutdown(cancel_pending=True, timeout=0)

