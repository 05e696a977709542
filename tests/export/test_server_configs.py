"""trainer.export.server_configs: the text protos TF Serving and serving.server read."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from recsys_common import contract
from serving._protos.tensorflow_serving.config import batching_parameters_pb2, monitoring_config_pb2
from serving.batching import BatchingOptions as ServedBatchingOptions
from trainer.export import server_configs
from trainer.export.server_configs import BatchingOptions, ServerConfigError, write_server_configs


def _publish(base: pathlib.Path, versions: dict[str, list[int]]) -> None:
    for model, numbers in versions.items():
        for number in numbers:
            (base / model / str(number)).mkdir(parents=True)


def _models(path: pathlib.Path) -> dict[str, model_server_config_pb2.ModelConfig]:
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    return {model.name: model for model in config.model_config_list.config}


@pytest.mark.parametrize(
    "published, keep, policy, labels",
    [
        ([1], 2, ("latest", 2), {}),
        ([1, 2], 2, ("specific", [1, 2]), {"stable": 1, "canary": 2}),
        ([3, 5, 9], 2, ("specific", [5, 9]), {"stable": 5, "canary": 9}),
        ([3, 5, 9], 3, ("specific", [3, 5, 9]), {"stable": 5, "canary": 9}),
        ([3, 5, 9], 1, ("latest", 1), {}),
    ],
)
def test_version_policy_and_labels(tmp_path, published, keep, policy, labels):
    _publish(tmp_path, {name: published for name in contract.MODEL_NAMES})
    paths = write_server_configs(tmp_path, contract.MODEL_NAMES, keep_versions=keep)
    models = _models(paths[contract.MODELS_CONFIG])
    assert list(models) == list(contract.MODEL_NAMES)
    for name, model in models.items():
        assert model.base_path == f"/models/{name}"
        assert model.model_platform == "tensorflow"
        kind, value = policy
        assert model.model_version_policy.WhichOneof("policy_choice") == kind
        if kind == "latest":
            assert model.model_version_policy.latest.num_versions == value
        else:
            assert list(model.model_version_policy.specific.versions) == value
        assert dict(model.version_labels) == labels


def test_local_config_uses_absolute_host_paths(tmp_path, monkeypatch):
    _publish(tmp_path / "saved_models", {contract.RANKING: [4], contract.RETRIEVAL_BRUTEFORCE: [1, 2]})
    monkeypatch.chdir(tmp_path)
    paths = write_server_configs(pathlib.Path("saved_models"), [contract.RANKING, contract.RETRIEVAL_BRUTEFORCE])
    local = _models(paths[server_configs.LOCAL_MODELS_CONFIG])
    container = _models(paths[contract.MODELS_CONFIG])
    for name in local:
        assert pathlib.Path(local[name].base_path) == (tmp_path / "saved_models" / name).resolve()
        assert pathlib.Path(local[name].base_path).is_absolute()
        assert local[name].model_version_policy == container[name].model_version_policy
    assert dict(local[contract.RETRIEVAL_BRUTEFORCE].version_labels) == {"stable": 1, "canary": 2}


def test_batching_and_monitoring_configs(tmp_path):
    _publish(tmp_path, {contract.RANKING: [1]})
    options = BatchingOptions(max_batch_size=32, batch_timeout_micros=500, num_batch_threads=2,
                              allowed_batch_sizes=(8, 16, 32))
    paths = write_server_configs(tmp_path, [contract.RANKING], batching=options, prometheus_path="/metrics")
    batching = text_format.Parse(paths[contract.BATCHING_CONFIG].read_text(),
                                 batching_parameters_pb2.BatchingParameters())
    assert batching.max_batch_size.value == 32
    assert batching.batch_timeout_micros.value == 500
    assert batching.num_batch_threads.value == 2
    assert batching.max_enqueued_batches.value == 100
    assert list(batching.allowed_batch_sizes) == [8, 16, 32]
    assert batching.pad_variable_length_inputs
    monitoring = text_format.Parse(paths[contract.MONITORING_CONFIG].read_text(),
                                   monitoring_config_pb2.MonitoringConfig())
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path == "/metrics"


def test_default_monitoring_path_is_tf_servings():
    config = text_format.Parse(server_configs.monitoring_config(), monitoring_config_pb2.MonitoringConfig())
    assert config.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_the_local_server_reads_the_written_configs(tmp_path):
    from serving import model_config

    _publish(tmp_path, {contract.RANKING: [1, 2], contract.RETRIEVAL: [5]})
    paths = write_server_configs(tmp_path, [contract.RANKING, contract.RETRIEVAL])
    local = model_config.read_model_config_file(paths[server_configs.LOCAL_MODELS_CONFIG])
    settings = {entry.name: entry for entry in local}
    assert settings[contract.RANKING].wanted_versions([1, 2, 3]) == {1, 2}
    assert settings[contract.RANKING].label_version("canary") == 2
    assert settings[contract.RETRIEVAL].wanted_versions([4, 5]) == {4, 5}
    batching = model_config.read_batching_parameters(paths[contract.BATCHING_CONFIG])
    served = ServedBatchingOptions.from_proto(batching)
    assert dataclasses.asdict(served) == dataclasses.asdict(BatchingOptions())


def test_rewriting_replaces_the_files_and_moves_the_labels(tmp_path):
    _publish(tmp_path, {contract.RANKING: [1, 2]})
    write_server_configs(tmp_path, [contract.RANKING])
    _publish(tmp_path, {contract.RANKING: [3]})
    paths = write_server_configs(tmp_path, [contract.RANKING])
    assert dict(_models(paths[contract.MODELS_CONFIG])[contract.RANKING].version_labels) == {"stable": 2, "canary": 3}
    assert sorted(path.name for path in tmp_path.iterdir() if path.is_file()) == sorted(paths)


@pytest.mark.parametrize(
    "models, keep, batching, message",
    [
        ([], 2, BatchingOptions(), "at least one model"),
        ([contract.RANKING, contract.RANKING], 2, BatchingOptions(), "listed twice"),
        ([contract.RANKING, contract.RETRIEVAL], 2, BatchingOptions(), r"no published version of \['retrieval'\]"),
        ([contract.RANKING], 0, BatchingOptions(), "keep_versions"),
        ([contract.RANKING], 2, BatchingOptions(max_batch_size=0), "max_batch_size"),
        ([contract.RANKING], 2, BatchingOptions(max_batch_size=16, allowed_batch_sizes=(4, 8)), "allowed_batch_sizes"),
        ([contract.RANKING], 2, BatchingOptions(batch_timeout_micros=-1), "batch_timeout_micros"),
    ],
)
def test_bad_arguments_are_refused_and_nothing_is_written(tmp_path, models, keep, batching, message):
    _publish(tmp_path, {contract.RANKING: [1]})
    with pytest.raises(ServerConfigError, match=message):
        write_server_configs(tmp_path, models, keep_versions=keep, batching=batching)
    assert not [path for path in tmp_path.iterdir() if path.is_file()]
