"""Fixtures of the server tests: the session-wide test models and one shared running server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the helpers module beside this file (importlib mode)

from server_test_models import (
    HALF_PLUS_TWO,
    HALF_PLUS_TWO_TF2,
    Affine,
    Counter,
    Multi,
    build_scann_model,
    grpc_stubs,
    model_config_text,
    save_module,
)

from serving.testing import ServerProcess, running_server
from trainer.export.layout import write_warmup_requests


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Session-wide models: affine/1, multi/1, counter/1 (with 3 warmup requests), scann/1."""
    root = tmp_path_factory.mktemp("models")
    save_module(Affine(1.0), root / "affine" / "1")
    save_module(Multi(), root / "multi" / "1")
    save_module(Counter(), root / "counter" / "1")
    write_warmup_requests(root / "counter" / "1", "counter", [{"x": np.array([1.0, 2.0], np.float32)}] * 3)
    build_scann_model(root / "scann" / "1")
    return root


@pytest.fixture(scope="session")
def main_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for the read-only tests: TF Serving's half_plus_two (as `default`, and the TF2 variant)
    when the test data is present, plus the models built here; monitoring on."""
    folder = tmp_path_factory.mktemp("main_server")
    models = {name: model_root / name for name in ("affine", "multi", "counter", "scann")}
    if HALF_PLUS_TWO.is_dir():
        models["default"] = HALF_PLUS_TWO
        models["half_plus_two_tf2"] = HALF_PLUS_TWO_TF2
    (folder / "models.config").write_text(model_config_text(models))
    (folder / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    with running_server(wait_for=list(models), log_dir=folder, model_config_file=folder / "models.config",
                        monitoring_config_file=folder / "monitoring.config") as server:
        yield server


@pytest.fixture(scope="session")
def stubs(main_server: ServerProcess) -> Iterator[tuple[Any, Any]]:
    """(PredictionService stub, ModelService stub) connected to the shared server."""
    channel, prediction, model_service = grpc_stubs(main_server.grpc_target)
    with channel:
        yield prediction, model_service
