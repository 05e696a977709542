"""Shared fixtures: a hand-made feature space and request, a small synthetic dataset, trained models."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from recsys_common import contract
from trainer.config import Config, load_config
from trainer.context import ModelContext
from trainer.data.bundle import TrainingData, prepare
from trainer.data.catalog import ItemCatalog
from trainer.data.vocab import Vocabularies
from trainer.ranking.export import export_ranking
from trainer.ranking.models import RankingModel
from trainer.ranking.protocol import RankingData, ncf_protocol, temporal_protocol
from trainer.ranking.train import RankingResult, train_model, train_ranking
from trainer.run import RunContext

DAY = 86_400
# Small enough to train in seconds on 2 cores, big enough for the planted structure to show.
SMALL = {
    "synthetic.num_users": 300,
    "synthetic.num_items": 200,
    "synthetic.events_per_user": 30,
    "data.history_length": 10,
    "data.search_history_length": 5,
    "ranking.embedding_dim": 8,
    "ranking.mlp_layers": [32, 16, 8],
    "ranking.feature_embedding_dim": 4,
    "ranking.learning_rate": 0.005,
    "ranking.batch_size": 256,
    "ranking.epochs": 3,
    "ranking.num_quantiles": 20,
    "ranking.eval_ks": [10],
    "ranking.compare": ["itempop", "neumf_pretrained"],
    "ranking.model": "full",
    "retrieval.embedding_dim": 8,
    "retrieval.tower_layers": [16, 8],
    "retrieval.epochs": 1,
    "retrieval.eval_ks": [10],
    "retrieval.early_stopping_k": 10,
    "export.max_k": 20,
    "export.warmup_requests": 2,
}


def small_config(**overrides: object) -> Config:
    """The small config with extra {"section.field": value} overrides."""
    return load_config(None, {**SMALL, **overrides})


def strings(rows: list) -> np.ndarray:
    return np.array(rows, dtype=object)


@pytest.fixture(scope="session")
def hand_space() -> ModelContext:
    """Three training items a, b, c; the catalogue adds d (genre g3, unknown to the vocabulary)."""
    vocab = Vocabularies(user_ids=("u1", "u2"), item_ids=("a", "b", "c"), genders=("M", "F"), occupations=("x",),
                         regions=("1",), genres=("g1", "g2"), title_tokens=(), query_tokens=())
    catalog = ItemCatalog(item_ids=strings(["a", "b", "c", "d"]),
                          genres=strings([["g1", ""], ["g2", "g1"], ["g2", ""], ["g3", ""]]),
                          title_tokens=strings([[""]] * 4), release_time=np.array([100 * DAY, 200 * DAY, 0, 300 * DAY]),
                          titles=strings(["", "", "", ""]))
    return ModelContext(
        vocab=vocab, catalog=catalog, t_max=400 * DAY, t_span=300 * DAY, age_boundaries=(18.0, 25.0, 35.0),
        available=frozenset({"gender", "occupation", "region", "age", "genres", "release_time", "watch_time"}),
    )


@pytest.fixture()
def hand_request() -> dict[str, np.ndarray]:
    """Two users: a known one at day 350, an unknown one with unknown request time and demographics."""
    return {
        contract.USER_ID: strings(["u1", "stranger"]),
        contract.WATCH_HISTORY: strings([["", "a", "b"], ["c", "c", "a"]]),
        contract.SEARCH_HISTORY: strings([[""], [""]]),
        contract.GENDER: strings(["M", ""]),
        contract.OCCUPATION: strings(["x", "unseen"]),
        contract.REGION: strings(["1", "1"]),
        contract.AGE: np.array([30, 0], dtype=np.int64),
        contract.REQUEST_TIME: np.array([350 * DAY, 0], dtype=np.int64),
        contract.CANDIDATE_IDS: strings([["a", "c", "d", ""], ["new-item", "b", "a", "c"]]),
    }


@pytest.fixture(scope="session")
def config() -> Config:
    return small_config()


@pytest.fixture(scope="session")
def data(config: Config) -> TrainingData:
    return prepare(config)


@pytest.fixture(scope="session")
def temporal(data: TrainingData, config: Config) -> RankingData:
    return temporal_protocol(data, config)


@pytest.fixture(scope="session")
def ncf(data: TrainingData, config: Config) -> RankingData:
    return ncf_protocol(data.dataset, config)


@pytest.fixture(scope="session")
def full_model(temporal: RankingData, config: Config) -> RankingModel:
    """The full model (NeuMF + ranking features) trained on the temporal split."""
    return train_model("full", temporal, config)[0]


@pytest.fixture(scope="session")
def retrieval_result(config: Config, data: TrainingData, tmp_path_factory: pytest.TempPathFactory):
    from trainer.retrieval.train import train_retrieval

    return train_retrieval(config, data, RunContext(tmp_path_factory.mktemp("retrieval_run")))


@pytest.fixture(scope="session")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> RunContext:
    return RunContext(tmp_path_factory.mktemp("run"))


@pytest.fixture(scope="session")
def ranking_result(config: Config, data: TrainingData, run_folder: RunContext, retrieval_result) -> RankingResult:
    """The ranking stage as the task runs it: the full model with the retrieval score, and the comparison."""
    return train_ranking(config, data, run_folder, retrieval_result)


@pytest.fixture(scope="session")
def exported(ranking_result: RankingResult, data: TrainingData, config: Config,
             tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return export_ranking(ranking_result, data, config.export, tmp_path_factory.mktemp("saved_models"))
