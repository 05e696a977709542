"""Feature ablations of the candidate generator (Covington et al. 2016, figure 6 style).

Each ablation trains the generator from scratch with a cumulative set of query features on
the run's temporal split and reports the test-period Recall@K / NDCG@K. Feature groups the
data lacks are dropped and the table says so (MovieLens has no searches, so `+search` equals
`+history` there). The table goes to <run>/retrieval_ablations.md and .json.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from trainer.config import RETRIEVAL_FEATURES, Config
from trainer.data.bundle import TrainingData
from trainer.retrieval.features import dropped_features
from trainer.retrieval.train import fit_and_evaluate
from trainer.run import RunContext, markdown_table

ABLATIONS: dict[str, tuple[str, ...]] = {
    "id_only": ("user_id",),
    "+history": ("user_id", "watch_history"),
    "+search": ("user_id", "watch_history", "search_history"),
    "+demographics": ("user_id", "watch_history", "search_history", "demographics", "region"),
    "all": RETRIEVAL_FEATURES,
}
TABLE_NAME = "retrieval_ablations"


def run_ablations(config: Config, data: TrainingData, run: RunContext,
                  names: Sequence[str] = tuple(ABLATIONS)) -> list[dict[str, Any]]:
    """Trains one generator per ablation and writes the table; returns its rows.

    Raises:
        ValueError: an unknown ablation name.
    """
    unknown = [name for name in names if name not in ABLATIONS]
    if unknown:
        raise ValueError(f"unknown ablation(s) {unknown}; choose from {list(ABLATIONS)}")
    rows = [ablation_row(config, data, run, name) for name in names]
    columns = ["ablation", *[f"recall@{k}" for k in config.retrieval.eval_ks],
               *[f"ndcg@{k}" for k in config.retrieval.eval_ks], "epochs_trained", "features", "dropped"]
    run.write_text(f"{TABLE_NAME}.md", markdown_table(rows, columns))
    run.write_json(f"{TABLE_NAME}.json", rows)
    return rows


def ablation_row(config: Config, data: TrainingData, run: RunContext, name: str) -> dict[str, Any]:
    """Trains and tests the ablation `name`; its table row."""
    features = list(ABLATIONS[name])
    ablated = dataclasses.replace(config, retrieval=dataclasses.replace(config.retrieval, features=features))
    run.log.info("retrieval ablation %s: features %s", name, features)
    result = fit_and_evaluate(ablated, data, None, None, run.log)
    dropped = dropped_features(features, data.available_features)
    return {"ablation": name, **result.metrics, "features": " ".join(result.features.enabled()),
            "dropped": " ".join(dropped) + (" (not in the data)" if dropped else "")}
