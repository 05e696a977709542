"""serving/docker-compose.yml refers to what the export writes (Docker itself is not run here)."""

from __future__ import annotations

import pathlib
import re

import pytest
import yaml

from recsys_common import contract
from trainer.config import ExportConfig
from trainer.export import server_configs

ROOT = pathlib.Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "serving" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> dict[str, pathlib.Path]:
    base = tmp_path_factory.mktemp("saved_models")
    for name in contract.MODEL_NAMES:
        (base / name / "1").mkdir(parents=True)
    return server_configs.write_server_configs(base, contract.MODEL_NAMES)


def _flags(service: dict) -> dict[str, str]:
    return dict(flag.lstrip("-").split("=", 1) for flag in service["command"])


def _served_models(config_path: pathlib.Path) -> list[str]:
    return re.findall(r'name: "([^"]+)"', config_path.read_text())


def test_every_container_reads_configs_that_the_export_writes(compose, written):
    for name, service in compose["services"].items():
        flags = _flags(service)
        for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
            container_path = pathlib.PurePosixPath(flags[flag])
            assert container_path.parent == pathlib.PurePosixPath(server_configs.CONTAINER_ROOT), (name, flag)
            assert container_path.name in written, f"{name}: {flag} names a file the export does not write"
        assert flags["enable_batching"] == "true"
        assert f"{server_configs.CONTAINER_ROOT}:ro" in "".join(service["volumes"])
        host_folder = service["volumes"][0].split(":")[0]
        assert host_folder == "../saved_models"
        assert (COMPOSE.parent / host_folder).resolve() == (ROOT / ExportConfig().output_dir).resolve()


def test_the_two_images_split_the_models_between_them(compose, written):
    served = {name: _served_models(written[pathlib.PurePosixPath(_flags(service)["model_config_file"]).name])
              for name, service in compose["services"].items()}
    assert sorted(model for models in served.values() for model in models) == sorted(contract.MODEL_NAMES)
    assert served["retrieval"] == [contract.RETRIEVAL]
    assert "scann" in compose["services"]["retrieval"]["image"]
    assert "tensorflow/serving" in compose["services"]["ranking"]["image"]


def test_ports_and_health_checks(compose, written):
    ranking, retrieval = compose["services"]["ranking"], compose["services"]["retrieval"]
    assert ranking["ports"] == ["8500:8500", "8501:8501"]
    assert [port.split(":")[1] for port in retrieval["ports"]] == ["8500", "8501"]
    for service in (ranking, retrieval):
        config = written[pathlib.PurePosixPath(_flags(service)["model_config_file"]).name]
        check = service["healthcheck"]["test"][-1]
        assert sorted(re.search(r"for model in ([\w ]+);", check).group(1).split()) == sorted(_served_models(config))
        assert "/v1/models/" in check and "AVAILABLE" in check
        assert _flags(service)["rest_api_port"] in check
