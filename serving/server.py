"""`python -m serving.server`: a TF-Serving-compatible model server (the flags of tensorflow_model_server).

    python -m serving.server --port=8500 --rest_api_port=8501 \\
        --model_config_file=saved_models/models.local.config --file_system_poll_wait_seconds=1 \\
        [--enable_batching --batching_parameters_file=saved_models/batching.config] \\
        [--monitoring_config_file=saved_models/monitoring.config]
    python -m serving.server --model_name=default --model_base_path=/path/to/model --rest_api_port=8501

Binds to localhost unless --host says otherwise. Loads every model before opening its ports
(as TF Serving does), then polls the model directories (and, if asked, the config file) for
changes. SIGINT / SIGTERM stop it gracefully.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys_common import tf_env  # noqa: F401  (before TensorFlow loads)

# isort: split
from tensorflow.core.protobuf import config_pb2

from serving.batching import BatchingOptions, BatchScheduler
from serving.core import RequestLimits, ServingCore
from serving.errors import ServingError
from serving.grpc_service import create_grpc_server, server_credentials
from serving.model_config import (
    ConfigError,
    ModelSettings,
    metrics_path,
    read_batching_parameters,
    read_model_config_file,
    read_monitoring_config,
    read_ssl_config,
    single_model,
)
from serving.model_manager import LoadPolicy, ModelManager
from serving.monitoring import Metrics
from serving.rest import RestOptions, RestServer
from serving.session_model import SessionModel, serving_session_config
from serving.warmup import replay_warmup

LOG = logging.getLogger("serving.server")
MAX_PORT = 65535
PORT_FLAGS = ("port", "rest_api_port")  # 0: a free port for gRPC, no REST listener


@dataclasses.dataclass(frozen=True)
class ServerOptions:
    """The server's settings; field names are tensorflow_model_server's flag names."""

    port: int = 8500
    rest_api_port: int = 0
    host: str = "localhost"
    model_name: str = "default"
    model_base_path: str = ""
    model_config_file: str = ""
    model_config_file_poll_wait_seconds: float = 0.0
    file_system_poll_wait_seconds: float = 1.0
    enable_batching: bool = False
    batching_parameters_file: str = ""
    monitoring_config_file: str = ""
    enable_model_warmup: bool = True
    grpc_max_threads: int = 32
    max_request_batch_size: int = RequestLimits.max_batch_size
    max_request_bytes: int = RequestLimits.max_request_bytes
    ssl_config_file: str = ""
    enable_model_reload: bool = False
    max_num_load_retries: int = 5
    load_retry_interval_micros: int = 60_000_000
    tensorflow_intra_op_parallelism: int = 0
    tensorflow_inter_op_parallelism: int = 0
    rest_api_num_threads: int = 0
    rest_api_timeout_in_ms: int = 30_000
    rest_api_max_request_bytes: int = RestOptions.max_request_bytes

    def models(self) -> list[ModelSettings]:
        """The models to serve: the config file's, or the single --model_name / --model_base_path one."""
        if self.model_config_file:
            if self.model_base_path:
                raise ConfigError("Use either --model_config_file or --model_base_path, not both")
            return read_model_config_file(Path(self.model_config_file))
        return single_model(self.model_name, self.model_base_path)


FLAG_HELP = {
    "port": "gRPC port (PredictionService, ModelService)",
    "rest_api_port": "REST port; 0 disables the REST API",
    "host": "address to bind; localhost means 127.0.0.1",
    "model_name": "name of the single model served from --model_base_path",
    "model_base_path": "folder of numeric version directories of the single model",
    "model_config_file": "text-format ModelServerConfig listing the models (instead of --model_base_path)",
    "model_config_file_poll_wait_seconds": "re-read --model_config_file this often; 0 reads it once",
    "file_system_poll_wait_seconds": "look for new versions this often; 0 looks once, at start",
    "enable_batching": "batch concurrent requests to the same model version and signature",
    "batching_parameters_file": "text-format BatchingParameters (defaults when absent)",
    "monitoring_config_file": "text-format MonitoringConfig; enables Prometheus metrics on the REST port",
    "enable_model_warmup": "replay assets.extra/tf_serving_warmup_requests before a version serves",
    "grpc_max_threads": "threads answering gRPC calls",
    "max_request_batch_size": "most rows (dimension 0) one request may carry; more is RESOURCE_EXHAUSTED",
    "max_request_bytes": "largest gRPC request, and most bytes a request's tensors may take once decoded",
    "ssl_config_file": "text-format SSLConfig (PEM server_key, server_cert, custom_ca, client_verify): gRPC over TLS",
    "enable_model_reload": "allow ModelService.HandleReloadConfigRequest to replace the served models",
    "max_num_load_retries": "further attempts after a version fails to load",
    "load_retry_interval_micros": "wait between load attempts",
    "tensorflow_intra_op_parallelism": "TF intra-op threads per session; 0 lets TF choose",
    "tensorflow_inter_op_parallelism": ("TF inter-op threads per session; 0 lets TF choose; -1 runs a request's ops "
                                        "in its own thread (with a positive intra-op count only, as in TF Serving)"),
    "rest_api_num_threads": "REST requests worked on at once; 0 means 4 per CPU (as TF Serving)",
    "rest_api_timeout_in_ms": "REST request timeout (then 504); also closes a connection idle this long",
    "rest_api_max_request_bytes": "largest REST request body; a larger one is refused with 413",
}


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"a port must be in 0..{MAX_PORT}, got {port}")
    return port


def build_parser() -> argparse.ArgumentParser:
    """The flags (accepted as --flag=value or --flag value; booleans also as a bare --flag)."""
    parser = argparse.ArgumentParser(prog="python -m serving.server", description=__doc__.split("\n")[0])
    defaults = ServerOptions()
    for field in dataclasses.fields(ServerOptions):
        default = getattr(defaults, field.name)
        if isinstance(default, bool):
            parser.add_argument(f"--{field.name}", type=_parse_bool, nargs="?", const=True, default=default,
                                help=f"{FLAG_HELP[field.name]} (default {str(default).lower()})")
        else:
            parse = _parse_port if field.name in PORT_FLAGS else type(default)
            parser.add_argument(f"--{field.name}", type=parse, default=default,
                                help=f"{FLAG_HELP[field.name]} (default {default!r})")
    return parser


def parse_options(argv: Sequence[str]) -> ServerOptions:
    namespace = build_parser().parse_args(list(argv))
    return ServerOptions(**vars(namespace))


class ModelServer:
    """The assembled server: model manager, optional batching and metrics, gRPC and REST front ends."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._models = models = options.models()
        self.rest_options = RestOptions.from_flags(options.rest_api_num_threads, options.rest_api_timeout_in_ms,
                                                   options.rest_api_max_request_bytes)
        self.metrics = Metrics(model_known=lambda name: self.manager.serves(name))
        monitoring = read_monitoring_config(Path(options.monitoring_config_file)) \
            if options.monitoring_config_file else None
        self.metrics_path = metrics_path(monitoring)
        if self.metrics_path and not options.rest_api_port:
            LOG.warning("Monitoring is configured but --rest_api_port is not: no metrics page will be served")
        self.batcher = BatchScheduler(self._batching_options()) if options.enable_batching else None
        self.session_config = self._session_config()
        policy = LoadPolicy(max_retries=options.max_num_load_retries,
                            retry_interval_s=options.load_retry_interval_micros / 1e6)
        self.manager = ModelManager(models, self._load, options.file_system_poll_wait_seconds, policy, self.metrics)
        self.core = ServingCore(self.manager, self.batcher, self._request_limits())
        self._credentials = server_credentials(read_ssl_config(Path(options.ssl_config_file))) \
            if options.ssl_config_file else None
        self.grpc_port = 0
        self.rest_port = 0
        self._grpc_server: Any = None
        self._rest_server: RestServer | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def _batching_options(self) -> BatchingOptions:
        if not self.options.batching_parameters_file:
            return BatchingOptions()
        params = read_batching_parameters(Path(self.options.batching_parameters_file))
        try:
            return BatchingOptions.from_proto(params)
        except ValueError as error:
            raise ConfigError(f"Invalid batching parameters in {self.options.batching_parameters_file}: "
                              f"{error}") from error

    def _request_limits(self) -> RequestLimits:
        limits = RequestLimits(self.options.max_request_batch_size, self.options.max_request_bytes)
        try:
            limits.validate()
        except ValueError as error:
            raise ConfigError(str(error)) from error
        return limits

    def _session_config(self) -> config_pb2.ConfigProto:
        intra, inter = self.options.tensorflow_intra_op_parallelism, self.options.tensorflow_inter_op_parallelism
        if inter < 0 and intra <= 0:
            LOG.warning("--tensorflow_inter_op_parallelism=%d is ignored (as TF Serving ignores it) unless "
                        "--tensorflow_intra_op_parallelism is positive; TF chooses both thread pools", inter)
        return serving_session_config(intra, inter)

    def _load(self, version_dir: Path) -> SessionModel:
        model = SessionModel.load(version_dir, session_config=self.session_config)
        if not self.options.enable_model_warmup:
            return model
        try:
            replayed = replay_warmup(model, version_dir, self.options.max_request_bytes)
        except ServingError:
            model.close()
            raise
        if replayed:
            LOG.info("Finished reading %d warmup records for %s", replayed, version_dir)
        return model

    def start(self) -> None:
        """Loads the models, then opens the ports (raises RuntimeError when a port cannot be bound)."""
        try:
            self._start()
        except BaseException:
            self.stop(grace_seconds=0)
            raise

    @property
    def bind_host(self) -> str:
        """The address bound: "localhost" means 127.0.0.1 only, so that a port in use is an error rather
        than a silent IPv6-only bind (clients of "localhost:<port>" still connect)."""
        host = self.options.host
        return "127.0.0.1" if host == "localhost" else host

    def _start(self) -> None:
        self.manager.start()
        grpc_host = f"[{self.bind_host}]" if ":" in self.bind_host else self.bind_host
        self._grpc_server, self.grpc_port = create_grpc_server(
            self.core, f"{grpc_host}:{self.options.port}", self.options.grpc_max_threads, self.metrics,
            credentials=self._credentials, enable_model_reload=self.options.enable_model_reload)
        self._grpc_server.start()
        LOG.info("Running gRPC ModelServer at %s:%d%s ...", self.options.host, self.grpc_port,
                 " (TLS)" if self._credentials else "")
        if self.options.rest_api_port:
            try:
                self._rest_server = RestServer((self.bind_host, self.options.rest_api_port), self.core,
                                               self.metrics, self.metrics_path, self.rest_options)
            except OSError as error:
                raise RuntimeError(f"Cannot bind the REST API to {self.options.host}:"
                                   f"{self.options.rest_api_port}: {error}") from error
            self.rest_port = self._rest_server.server_address[1]
            self._spawn(self._rest_server.serve_forever, "rest")
            LOG.info("Exporting HTTP/REST API at:%s:%d ...", self.options.host, self.rest_port)
        if self.options.model_config_file and self.options.model_config_file_poll_wait_seconds > 0:
            self._spawn(self._poll_config_file, "config-poller")

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll_config_file(self) -> None:
        current = self._models  # what the manager was started with: a change made since is picked up too
        while not self._stopping.wait(self.options.model_config_file_poll_wait_seconds):
            try:
                models = read_model_config_file(Path(self.options.model_config_file))
            except ConfigError as error:
                LOG.error("Keeping the current models: %s", error)
                continue
            if models != current:
                LOG.info("Model config changed: now serving %s", ", ".join(m.name for m in models))
                self.manager.reload(models)
                current = models

    def stop(self, grace_seconds: float = 5.0) -> None:
        """Stops accepting requests, lets in-flight ones finish (up to the grace period), unloads models."""
        self._stopping.set()
        if self._grpc_server is not None:
            self._grpc_server.stop(grace_seconds).wait()
        if self._rest_server is not None:
            self._rest_server.shutdown()
        if self.batcher is not None:
            self.batcher.stop()
        self.manager.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the server until SIGINT / SIGTERM; returns the process exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # TF1 loader deprecation notices, once per load
    options = parse_options(sys.argv[1:] if argv is None else argv)
    try:
        server = ModelServer(options)
        server.start()
    except (ConfigError, RuntimeError, OSError) as error:
        LOG.error("%s", error)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.wait(1.0):
        pass
    LOG.info("Shutting down")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
