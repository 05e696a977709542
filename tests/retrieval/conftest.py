"""Shared fixtures: one small synthetic dataset, one trained generator and one export per session."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import pytest

from trainer.config import Config, load_config
from trainer.data.bundle import TrainingData, prepare
from trainer.retrieval.export import export_retrieval
from trainer.retrieval.train import RetrievalResult, train_retrieval
from trainer.run import RunContext

# Small enough to train in seconds on 2 cores, big enough for the planted structure to show.
SMALL = {
    "synthetic.num_users": 300,
    "synthetic.num_items": 200,
    "synthetic.num_topics": 8,
    "synthetic.latent_dim": 8,
    "synthetic.events_per_user": 20,
    "synthetic.num_regions": 4,
    "synthetic.days": 60,
    "data.history_length": 10,
    "data.search_history_length": 5,
    "retrieval.embedding_dim": 16,
    "retrieval.tower_layers": [32, 16],
    "retrieval.batch_size": 128,
    "retrieval.epochs": 4,
    "retrieval.eval_ks": [10, 50],
    "retrieval.early_stopping_k": 50,
    "export.max_k": 50,
    "export.warmup_requests": 2,
}


def small_config(**overrides: object) -> Config:
    """The small config with extra {"section.field": value} overrides."""
    return load_config(None, {**SMALL, **overrides})


@pytest.fixture(name="small_config", scope="session")
def small_config_fixture() -> Callable[..., Config]:
    """A factory: small_config(**{"retrieval.epochs": 2}) -> Config."""
    return small_config


@pytest.fixture(scope="session")
def config() -> Config:
    return small_config()


@pytest.fixture(scope="session")
def data(config: Config) -> TrainingData:
    return prepare(config)


@pytest.fixture(scope="session")
def trained(config: Config, data: TrainingData, tmp_path_factory: pytest.TempPathFactory) -> RetrievalResult:
    return train_retrieval(config, data, RunContext(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="session")
def exported(trained: RetrievalResult, data: TrainingData, config: Config,
             tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    return export_retrieval(trained, data, config.export, tmp_path_factory.mktemp("saved_models"))

