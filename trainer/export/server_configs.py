"""TF Serving's configuration files, written next to the model folders of `saved_models/`.

    models.config        ModelServerConfig with container paths (/models/<name>), for TF Serving in Docker
    models.local.config  the same with absolute host paths, for `python -m serving.server` or a host TF Serving
    models.stock.config  the models stock `tensorflow/serving` can load (no ScaNN ops), container paths
    models.scann.config  the models that need the ScaNN ops (deploy/tf-serving-scann's image), container paths
    batching.config      BatchingParameters (--enable_batching --batching_parameters_file=...)
    monitoring.config    MonitoringConfig: Prometheus metrics on the REST port

TF Serving exits when a model of its initial config fails to load, and stock TF Serving
cannot load `retrieval` (op namespace `Scann`), hence the split configs that
serving/docker-compose.yml gives its two servers; a split config is written only when it
lists at least one model.

Version policy: where `keep_versions` >= 2 and at least two versions are published, the
newest `keep_versions` versions are served (`specific`) and labelled `stable` (the
previous one) and `canary` (the newest), so callers can pin `stable` while a share of
traffic tries `canary`; a newer export is served once the configs are written again
(TF Serving rereads models.config with --model_config_file_poll_wait_seconds).
Otherwise the `latest` `keep_versions` versions are served, without labels.
With `version_sets=True` (what `trainer.task` writes after a `layout.VersionSet` export) only
the versions that every listed model has are served, always as `specific` versions, so the
models serve in step and a label names the same version number on every model.

Every file is built as a protobuf message, rendered with text_format and parsed back
before it is written, so a file this module writes always loads.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from collections.abc import Collection, Sequence

from google.protobuf import message, text_format
from tensorflow_serving.config import model_server_config_pb2

from recsys_common import contract, server_config
from recsys_common.server_config import DEFAULT_METRICS_PATH
from serving._protos.tensorflow_serving.config import batching_parameters_pb2, monitoring_config_pb2
from trainer.export import layout

LOCAL_MODELS_CONFIG = "models.local.config"
STOCK_MODELS_CONFIG = "models.stock.config"
SCANN_MODELS_CONFIG = "models.scann.config"
CONTAINER_ROOT = "/models"
PROMETHEUS_PATH = DEFAULT_METRICS_PATH  # TF Serving's default
MODEL_PLATFORM = "tensorflow"
STABLE_LABEL = "stable"
CANARY_LABEL = "canary"


class ServerConfigError(ValueError):
    """Server configs that cannot be written; the message names the model or option."""


@dataclasses.dataclass(frozen=True)
class BatchingOptions(server_config.BatchingOptions):
    """The batching.config the export writes: BatchingParameters for small, latency-bound requests.

    The base class holds TF Serving's defaults for fields a file leaves unset; these are the
    values written. `pad_variable_length_inputs` lets requests with different history or
    candidate lengths share a batch; TF Serving pads with each tensor's first element, which
    is the "" pad for rows that `serving.client` left-pads (see its docstring).
    """

    max_batch_size: int = 64
    batch_timeout_micros: int = 2000
    max_enqueued_batches: int = 100
    num_batch_threads: int = 4
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = True

    def validate(self) -> None:
        try:
            super().validate()
        except ValueError as error:
            raise ServerConfigError(f"batching.{error}") from None


def write_server_configs(
    base_dir: pathlib.Path,
    models: Sequence[str] = contract.MODEL_NAMES,
    keep_versions: int = 2,
    *,
    scann_models: Collection[str] | None = None,
    batching: BatchingOptions = BatchingOptions(),
    container_root: str = CONTAINER_ROOT,
    prometheus_path: str = PROMETHEUS_PATH,
    version_sets: bool = False,
) -> dict[str, pathlib.Path]:
    """Writes the config files into `base_dir` for the models published there.

    Args:
        base_dir: the saved_models folder holding `<model>/<version>/`.
        models: model names (folders of `base_dir`), each with at least one version.
        keep_versions: how many of the newest versions each model serves (>= 1).
        scann_models: the models that need the ScaNN ops; default `retrieval` and its shards.
        batching: BatchingParameters for batching.config.
        container_root: where `base_dir` is mounted in the TF Serving container.
        prometheus_path: the REST path of the Prometheus metrics.
        version_sets: serve only the versions every model has (published together), as `specific` versions.

    Returns:
        {file name: path} of the files written: models.config, models.local.config, batching.config,
        monitoring.config, and models.stock.config / models.scann.config where they list a model.

    Raises:
        ServerConfigError: no models, a duplicate or unpublished model, keep_versions < 1, bad batching options,
            or (version_sets) no version that every model has.
    """
    base_dir = pathlib.Path(base_dir)
    versions = _published_versions(base_dir, models, keep_versions)
    if version_sets:
        versions = _common_versions(versions, keep_versions)
    batching.validate()
    needs_scann = _needs_scann(versions, scann_models)
    split = {
        STOCK_MODELS_CONFIG: {name: found for name, found in versions.items() if name not in needs_scann},
        SCANN_MODELS_CONFIG: {name: found for name, found in versions.items() if name in needs_scann},
    }
    texts = {
        contract.MODELS_CONFIG: model_server_config(versions, keep_versions, container_root, version_sets),
        LOCAL_MODELS_CONFIG: model_server_config(versions, keep_versions, str(base_dir.resolve()), version_sets),
        **{name: model_server_config(part, keep_versions, container_root, version_sets)
           for name, part in split.items() if part},
        contract.BATCHING_CONFIG: batching_config(batching),
        contract.MONITORING_CONFIG: monitoring_config(prometheus_path),
    }
    for stale in (name for name, part in split.items() if not part):
        (base_dir / stale).unlink(missing_ok=True)
    return {name: _write_atomically(base_dir / name, text) for name, text in texts.items()}


def model_server_config(versions: dict[str, list[int]], keep_versions: int, root: str, specific: bool = False) -> str:
    """models.config text: one ModelConfig per model with base path `<root>/<model>`.

    Args:
        versions: model name -> its published versions, ascending.
        keep_versions: how many of the newest versions to serve.
        root: the folder holding the model folders, as the server sees it.
        specific: always serve the listed versions (`specific`), never the `latest` policy.
    """
    config = model_server_config_pb2.ModelServerConfig()
    for name, published in versions.items():
        model = config.model_config_list.config.add(
            name=name, base_path=f"{root.rstrip('/')}/{name}", model_platform=MODEL_PLATFORM
        )
        kept = published[-keep_versions:]
        if specific or (keep_versions >= 2 and len(kept) >= 2):
            model.model_version_policy.specific.versions.extend(kept)
        if keep_versions >= 2 and len(kept) >= 2:
            model.version_labels[STABLE_LABEL] = kept[-2]
            model.version_labels[CANARY_LABEL] = kept[-1]
        elif not specific:
            model.model_version_policy.latest.num_versions = keep_versions
    return _checked_text(config, model_server_config_pb2.ModelServerConfig)


def batching_config(options: BatchingOptions) -> str:
    """batching.config text (BatchingParameters)."""
    return _checked_text(options.to_proto(batching_parameters_pb2.BatchingParameters()),
                         batching_parameters_pb2.BatchingParameters)


def monitoring_config(prometheus_path: str = PROMETHEUS_PATH) -> str:
    """monitoring.config text (MonitoringConfig with Prometheus enabled at `prometheus_path`)."""
    if not prometheus_path.startswith("/"):
        raise ServerConfigError(f"prometheus_path must start with '/', got {prometheus_path!r}")
    config = monitoring_config_pb2.MonitoringConfig()
    config.prometheus_config.enable = True
    config.prometheus_config.path = prometheus_path
    return _checked_text(config, monitoring_config_pb2.MonitoringConfig)


def _published_versions(base_dir: pathlib.Path, models: Sequence[str], keep_versions: int) -> dict[str, list[int]]:
    if isinstance(keep_versions, bool) or not isinstance(keep_versions, int) or keep_versions < 1:
        raise ServerConfigError(f"keep_versions must be an int >= 1, got {keep_versions!r}")
    if not models:
        raise ServerConfigError("no models given: models.config needs at least one model")
    duplicates = sorted({name for name in models if list(models).count(name) > 1})
    if duplicates:
        raise ServerConfigError(f"models listed twice: {duplicates}")
    versions = {name: layout.list_versions(base_dir / name) for name in models}
    missing = [name for name, published in versions.items() if not published]
    if missing:
        raise ServerConfigError(
            f"no published version of {missing} under {base_dir}: export the models before writing server configs"
        )
    return versions


def _common_versions(versions: dict[str, list[int]], keep_versions: int) -> dict[str, list[int]]:
    """The newest `keep_versions` versions every model has, for every model (policy `specific` then)."""
    common = sorted(set.intersection(*(set(found) for found in versions.values())))
    if not common:
        raise ServerConfigError(f"no version is published for every model of {sorted(versions)} "
                                f"({versions}): export them together (layout.VersionSet)")
    return {name: common[-keep_versions:] for name in versions}


def _needs_scann(versions: dict[str, list[int]], scann_models: Collection[str] | None) -> set[str]:
    if scann_models is None:
        shard_prefix = contract.shard_model_name(0).rsplit("_", 1)[0] + "_"
        return {name for name in versions if name == contract.RETRIEVAL or name.startswith(shard_prefix)}
    unknown = sorted(set(scann_models) - set(versions))
    if unknown:
        raise ServerConfigError(f"scann_models {unknown} are not among the models {sorted(versions)}")
    return set(scann_models)


def _checked_text(config: message.Message, message_type: type[message.Message]) -> str:
    text = text_format.MessageToString(config)
    if text_format.Parse(text, message_type()) != config:
        raise ServerConfigError(f"{message_type.__name__} text does not parse back to the same message")
    return text


def _write_atomically(path: pathlib.Path, text: str) -> pathlib.Path:
    temp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)
    return path
