"""A tiny recommender trained in this process once per module, exported, and served by `python -m serving.server`.

`trainer.task.run_task` returns only the run folder and the exported paths, so the fixture runs
its stages itself, in its order (prepare, train_retrieval, train_ranking, export_retrieval,
export_ranking, write_server_configs), and keeps the trained results for in-process answers.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator

import pytest

import trainer  # noqa: F401  (legacy Keras and quiet logs before TensorFlow loads)

# isort: split
from recsys_common import contract
from serving.testing import ServerProcess, start_server
from trainer import config as config_lib
from trainer.data import bundle
from trainer.data.bundle import TrainingData
from trainer.export.server_configs import LOCAL_MODELS_CONFIG, write_server_configs
from trainer.ranking.export import export_ranking
from trainer.ranking.train import RankingResult, train_ranking
from trainer.retrieval.export import export_retrieval
from trainer.retrieval.train import RetrievalResult, train_retrieval
from trainer.run import RunContext

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY_CONFIG = ROOT / "tests" / "configs" / "tiny.yaml"
COMPARED_RANKERS = ["itempop"]  # the NCF comparison table is not under test here; itempop trains in one pass


@dataclasses.dataclass
class TrainedModels:
    """The in-process side: the config, data and trained stages, and where their exports go."""

    config: config_lib.Config
    data: TrainingData
    retrieval: RetrievalResult
    ranking: RankingResult
    saved_models: pathlib.Path

    @property
    def retrieval_k(self) -> int:
        """K, the length of the exported retrieval lists."""
        return min(self.config.export.max_k, len(self.retrieval.item_ids))

    def export(self) -> dict[str, pathlib.Path]:
        """Publishes a new version of every model and rewrites the server configs; returns the version folders."""
        exports = export_retrieval(self.retrieval, self.data, self.config.export, self.saved_models)
        exports[contract.RANKING] = export_ranking(self.ranking, self.data, self.config.export, self.saved_models)
        write_server_configs(self.saved_models, list(contract.MODEL_NAMES),
                             keep_versions=self.config.export.keep_versions)
        return exports


@pytest.fixture(scope="module")
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> TrainedModels:
    """The tiny config, with the test module's CONFIG_OVERRIDES ({"section.field": value}) when it has them."""
    out = tmp_path_factory.mktemp("trained")
    config = config_lib.load_config(TINY_CONFIG, {"run_dir": str(out / "runs"),
                                                  "export.output_dir": str(out / "saved_models"),
                                                  "ranking.compare": COMPARED_RANKERS,
                                                  **getattr(request.module, "CONFIG_OVERRIDES", {})})
    run = RunContext(out / "runs" / "integration")
    data = bundle.prepare(config)
    retrieval = train_retrieval(config, data, run)
    ranking = train_ranking(config, data, run, retrieval)
    return TrainedModels(config, data, retrieval, ranking, pathlib.Path(config.export.output_dir))


@pytest.fixture(scope="module")
def server(trained: TrainedModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The first export (version 1 of each model) served with the exported batching and monitoring configs."""
    trained.export()
    base = trained.saved_models
    process = start_server(
        wait_for=contract.MODEL_NAMES,
        timeout=120.0,
        log_dir=tmp_path_factory.mktemp("server_log"),
        model_config_file=base / LOCAL_MODELS_CONFIG,
        model_config_file_poll_wait_seconds=0.5,
        enable_batching=True,
        batching_parameters_file=base / contract.BATCHING_CONFIG,
        monitoring_config_file=base / contract.MONITORING_CONFIG,
    )
    try:
        yield process
    finally:
        process.stop()
