"""The server's configuration files: ModelServerConfig, BatchingParameters, MonitoringConfig (text protos).

Also the version policy: which numeric version directories under a model's base path are
to be served (TF Serving's `latest` / `all` / `specific` ServableVersionPolicy).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from recsys_common.server_config import DEFAULT_METRICS_PATH
from serving._protos.tensorflow_serving.config import batching_parameters_pb2, monitoring_config_pb2, ssl_config_pb2


class ConfigError(ValueError):
    """A configuration file or flag combination that cannot be served."""


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """One model of the config, validated.

    Attributes:
        name: the served model name.
        base_path: the folder holding the numeric version directories.
        policy: "latest", "all" or "specific".
        num_versions: for "latest", how many of the newest versions to serve.
        specific_versions: for "specific", the versions to serve.
        labels: version label -> version number.
    """

    name: str
    base_path: Path
    policy: str = "latest"
    num_versions: int = 1
    specific_versions: frozenset[int] = frozenset()
    labels: tuple[tuple[str, int], ...] = ()

    def wanted_versions(self, on_disk: Iterable[int]) -> set[int]:
        """The versions the policy asks to serve, of those present on disk."""
        present = sorted(set(on_disk))
        if self.policy == "all":
            return set(present)
        if self.policy == "specific":
            return {version for version in present if version in self.specific_versions}
        return set(present[-self.num_versions:]) if present else set()

    def label_version(self, label: str) -> int | None:
        return dict(self.labels).get(label)


def _read_text_proto(path: Path, proto: message.Message, what: str) -> message.Message:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"Cannot read the {what} file {path}: {error}") from error
    try:
        return text_format.Parse(text, proto)
    except text_format.ParseError as error:
        raise ConfigError(f"Invalid {what} file {path}: {error}") from error


def _model_settings(config: model_server_config_pb2.ModelConfig) -> ModelSettings:
    if not config.name:
        raise ConfigError("A model config entry has no name")
    if not config.base_path:
        raise ConfigError(f"Model {config.name!r} has no base_path")
    if config.model_platform not in ("", "tensorflow"):
        raise ConfigError(f"Model {config.name!r}: platform {config.model_platform!r} is not supported "
                          "(only 'tensorflow')")
    base_path = Path(config.base_path).resolve()  # relative to the working directory, as in TF Serving
    policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
    num_versions = 1
    specific: frozenset[int] = frozenset()
    if policy == "latest":
        num_versions = config.model_version_policy.latest.num_versions or 1
    elif policy == "specific":
        specific = frozenset(int(v) for v in config.model_version_policy.specific.versions)
        if not specific:
            raise ConfigError(f"Model {config.name!r}: the specific version policy lists no versions")
    labels = tuple(sorted((str(k), int(v)) for k, v in config.version_labels.items()))
    return ModelSettings(config.name, base_path, policy, num_versions, specific, labels)


def models_from_proto(config: model_server_config_pb2.ModelServerConfig) -> list[ModelSettings]:
    """Validates a ModelServerConfig (relative base paths are relative to the working directory)."""
    if config.WhichOneof("config") == "custom_model_config":
        raise ConfigError("custom_model_config is not supported; use model_config_list")
    models = [_model_settings(entry) for entry in config.model_config_list.config]
    names = [model.name for model in models]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigError(f"Model names must be unique; repeated: {', '.join(duplicates)}")
    return models


def read_model_config_file(path: Path) -> list[ModelSettings]:
    """Parses a text-format ModelServerConfig (--model_config_file)."""
    config = _read_text_proto(path, model_server_config_pb2.ModelServerConfig(), "model config")
    assert isinstance(config, model_server_config_pb2.ModelServerConfig)
    return models_from_proto(config)


def single_model(name: str, base_path: str) -> list[ModelSettings]:
    """The config of --model_name / --model_base_path: one model, latest version."""
    if not base_path:
        raise ConfigError("--model_base_path is required unless --model_config_file is given")
    if not name:
        raise ConfigError("--model_name must not be empty")
    return [ModelSettings(name, Path(base_path).resolve())]


def read_batching_parameters(path: Path) -> batching_parameters_pb2.BatchingParameters:
    """Parses a text-format BatchingParameters (--batching_parameters_file)."""
    params = _read_text_proto(path, batching_parameters_pb2.BatchingParameters(), "batching parameters")
    assert isinstance(params, batching_parameters_pb2.BatchingParameters)
    return params


def read_monitoring_config(path: Path) -> monitoring_config_pb2.MonitoringConfig:
    """Parses a text-format MonitoringConfig (--monitoring_config_file)."""
    config = _read_text_proto(path, monitoring_config_pb2.MonitoringConfig(), "monitoring config")
    assert isinstance(config, monitoring_config_pb2.MonitoringConfig)
    return config


def metrics_path(config: monitoring_config_pb2.MonitoringConfig | None) -> str | None:
    """The REST path of the Prometheus metrics, or None when monitoring is off."""
    if config is None or not config.prometheus_config.enable:
        return None
    path = config.prometheus_config.path or DEFAULT_METRICS_PATH
    return path if path.startswith("/") else f"/{path}"


def read_ssl_config(path: Path) -> ssl_config_pb2.SSLConfig:
    """Parses a text-format SSLConfig (--ssl_config_file), whose fields hold PEM text, as in TF Serving.

    Raises:
        ConfigError: unreadable file, unknown field, a missing or non-PEM key or certificate, or
            client_verify without a custom_ca to verify against.
    """
    config = _read_text_proto(path, ssl_config_pb2.SSLConfig(), "SSL config")
    assert isinstance(config, ssl_config_pb2.SSLConfig)
    for field in ("server_key", "server_cert"):
        if "-----BEGIN" not in getattr(config, field):
            raise ConfigError(f"SSL config {path}: {field} must hold the PEM text (\"-----BEGIN ...\"), "
                              f"not a file name")
    if config.custom_ca and "-----BEGIN" not in config.custom_ca:
        raise ConfigError(f"SSL config {path}: custom_ca must hold PEM text")
    if config.client_verify and not config.custom_ca:
        raise ConfigError(f"SSL config {path}: client_verify needs a custom_ca to verify client certificates")
    return config
