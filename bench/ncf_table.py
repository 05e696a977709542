"""The NCF-protocol table on MovieLens-100k: ItemPop, MF, GMF, MLP, NeuMF (with and without pretraining),
the full ranking model, and the ALS and BPR of the `implicit` library, all on one split.

`python -m bench.ncf_table --out FILE.json [--quick] [--data-dir DIR]`

Protocol (trainer.ranking.protocol.ncf_protocol, He et al. 2017): each user's latest event is the test
item, ranked among 99 sampled items the user never interacted with; the latest remaining event is the
validation item (with its own 99 negatives); every model trains on the rest. Hyper-parameters are chosen
on the validation HR@10 / NDCG@10 only (each grid point trains once, with early stopping on validation),
and the chosen model is then scored once on the test items. The ALS and BPR baselines are fitted on the
same training events (binary interactions) and scored through the same evaluation code, on the same
test items and negatives. Figures: HR@10, NDCG@10, mean per-user AUC and the weighted per-user loss on
the sampled candidates; Recall@K and NDCG@K of a full ranking of the catalogue (the user's earlier items
excluded). ItemPop is the baseline measured in the same run. Published figures on ml-1m (He et al. 2017;
Rendle et al. 2020), for orientation only: NeuMF HR@10 0.730 / NDCG@10 0.447, tuned dot-product MF
0.729 / 0.452; ml-100k is ~10x smaller, so its figures are not comparable one to one.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from threadpoolctl import threadpool_limits

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf

from bench.cli import SectionResult, add_data_dir, missing_ml_100k, section_parser
from recsys_common import contract
from trainer.config import Config, load_config
from trainer.data.sources import load_dataset
from trainer.layers import string_lookup
from trainer.ranking.evaluate import evaluate_full, evaluate_sampled
from trainer.ranking.models import RankingModel
from trainer.ranking.protocol import RankingData, ncf_protocol
from trainer.ranking.train import train_model

NEURAL_MODELS = ("mf", "gmf", "mlp", "neumf", "neumf_pretrained", "full")
FULL_KS = [10, 50]
# Training settings shared by every neural model; the grids vary the rest.
BASE = {"ranking.epochs": 20, "ranking.early_stopping_patience": 3, "ranking.batch_size": 256,
        "ranking.num_negatives": 4, "ranking.eval_ks": FULL_KS}
QUICK_BASE = {**BASE, "ranking.epochs": 1, "ranking.early_stopping_patience": 0, "ranking.batch_size": 1024}
GRIDS: dict[str, list[dict[str, Any]]] = {
    "mf": [{"learning_rate": 0.002, "embedding_dim": 32}, {"learning_rate": 0.005, "embedding_dim": 32}],
    "gmf": [{"learning_rate": 0.002, "embedding_dim": 32}, {"learning_rate": 0.005, "embedding_dim": 32}],
    "mlp": [{"learning_rate": 0.005}, {"learning_rate": 0.01}],
    "neumf": [{"learning_rate": 0.002, "embedding_dim": 32}, {"learning_rate": 0.005, "embedding_dim": 32}],
    "neumf_pretrained": [{"pretrained_learning_rate": 0.0002}, {"pretrained_learning_rate": 0.001}],
    "full": [{"learning_rate": 0.002, "embedding_dim": 32}, {"learning_rate": 0.005, "embedding_dim": 32}],
}
# One epoch at a large batch: the learning rate of the rate-tuned models goes up to match.
QUICK_GRIDS: dict[str, list[dict[str, Any]]] = {
    name: [{**grid[-1], **({"learning_rate": 0.01} if "learning_rate" in grid[-1] else {})}]
    for name, grid in GRIDS.items()}
IMPLICIT_GRIDS: dict[str, list[dict[str, Any]]] = {
    "als": [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f in (32, 64) for r in (0.01, 0.1) for a in (1.0, 10.0)],
    "bpr": [{"factors": f, "learning_rate": lr, "regularization": 0.01, "iterations": 100}
            for f in (32, 64) for lr in (0.01, 0.05)],
}
QUICK_IMPLICIT_GRIDS: dict[str, list[dict[str, Any]]] = {
    "als": [{"factors": 32, "regularization": 0.1, "alpha": 10.0, "iterations": 5}],
    "bpr": [{"factors": 32, "learning_rate": 0.05, "regularization": 0.01, "iterations": 20}],
}
LOGGER = logging.getLogger("bench.ncf_table")


class FactorModel(RankingModel):
    """User and item factors learnt elsewhere (implicit's ALS/BPR) on the ranking models' interface.

    Unknown users and items get zero factors (score 0), as in the neural models.
    """

    def __init__(self, user_ids: Sequence[str], item_ids: Sequence[str], user_factors: np.ndarray,
                 item_factors: np.ndarray, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.users, self.items = string_lookup(user_ids), string_lookup(item_ids)
        self.user_table = tf.constant(_with_unknown_rows(user_factors))
        self.item_table = tf.constant(_with_unknown_rows(item_factors))

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users = tf.gather(self.user_table, self.users(inputs[contract.USER_ID]))
        items = tf.gather(self.item_table, self.items(inputs[contract.CANDIDATE_IDS]))
        return tf.einsum("bd,bnd->bn", users, items)


def evaluate(model: RankingModel, data: RankingData) -> dict[str, float]:
    """Validation and test figures of a trained model (the same code for every row of the table)."""
    assert data.validation is not None and data.full_ranking is not None
    row = {f"validation_{k}": v for k, v in evaluate_sampled(model, data.validation).items()
           if k in ("hr@10", "ndcg@10")}
    row.update({f"test_{k}": v for k, v in evaluate_sampled(model, data.test).items()})
    row.update({f"test_{k}": v for k, v in evaluate_full(model, data.full_ranking, FULL_KS).items()})
    return row


def validation_key(row: dict[str, Any]) -> tuple[float, float]:
    return row["validation_hr@10"], row["validation_ndcg@10"]


def tune_neural(name: str, data: RankingData, config: Config, grid: list[dict[str, Any]],
                trained: dict[str, RankingModel]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trains `name` once per grid point; returns the test row of the best on validation, and all grid rows."""
    candidates = []
    for point in grid:
        point_config = dataclasses.replace(config, ranking=dataclasses.replace(config.ranking, **point))
        started = time.perf_counter()
        model, history = train_model(name, data, point_config, dict(trained))
        row = {"model": name, **point, "epochs": len(history.get("loss", [])),
               "train_s": round(time.perf_counter() - started, 1), **evaluate(model, data)}
        candidates.append((row, model))
        LOGGER.info("%s %s: validation HR@10 %.4f", name, point, row["validation_hr@10"])
    best_row, best_model = max(candidates, key=lambda pair: validation_key(pair[0]))
    trained[name] = best_model
    return best_row, [_validation_only(row) for row, _ in candidates]


def fit_implicit(kind: str, data: RankingData, params: dict[str, Any], seed: int) -> FactorModel:
    """ALS or BPR of the `implicit` library on the training events (binary user x item matrix)."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking

    users, items = list(data.space.vocab.user_ids), list(data.space.vocab.item_ids)
    rows = pd.Index(users).get_indexer(data.train[contract.USER_ID])
    columns = pd.Index(items).get_indexer(data.train["item_id"])
    matrix = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(len(users), len(items)))
    matrix.data[:] = 1.0  # repeated events count once
    model: Any
    with threadpool_limits(1, "blas"):  # implicit's own threads do the work; BLAS threads would fight them
        if kind == "als":
            model = AlternatingLeastSquares(**params, random_state=seed)
        else:
            model = BayesianPersonalizedRanking(**params, random_state=seed)
        model.fit(matrix, show_progress=False)
    return FactorModel(users, items, np.asarray(model.user_factors), np.asarray(model.item_factors), name=kind)


def tune_implicit(kind: str, data: RankingData, grid: list[dict[str, Any]], seed: int
                  ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    rows = []
    for params in grid:
        started = time.perf_counter()
        model = fit_implicit(kind, data, params, seed)
        rows.append({"model": f"implicit {kind.upper()}", **params,
                     "train_s": round(time.perf_counter() - started, 1), **evaluate(model, data)})
    return max(rows, key=validation_key), [_validation_only(row) for row in rows]


def run(data: RankingData, config: Config, quick: bool) -> dict[str, Any]:
    """Every row of the table and every grid point tried."""
    grids = QUICK_GRIDS if quick else GRIDS
    implicit_grids = QUICK_IMPLICIT_GRIDS if quick else IMPLICIT_GRIDS
    trained: dict[str, RankingModel] = {}
    started = time.perf_counter()
    popularity, _ = train_model("itempop", data, config)
    table = [{"model": "itempop", "train_s": round(time.perf_counter() - started, 1), **evaluate(popularity, data)}]
    selection: list[dict[str, Any]] = []
    best_rows: dict[str, dict[str, Any]] = {}
    for name in NEURAL_MODELS:
        grid = grids[name]
        if name == "neumf_pretrained":  # NeuMF takes the shapes of the GMF and MLP it starts from
            shapes = {"embedding_dim": best_rows["gmf"].get("embedding_dim", config.ranking.embedding_dim),
                      "mlp_layers": best_rows["mlp"].get("mlp_layers", config.ranking.mlp_layers)}
            grid = [{**point, **shapes} for point in grid]
        best, tried = tune_neural(name, data, config, grid, trained)
        best_rows[name] = best
        table.append(best)
        selection.extend(tried)
    for kind in ("als", "bpr"):
        best, tried = tune_implicit(kind, data, implicit_grids[kind], config.seed)
        table.append(best)
        selection.extend(tried)
    return {"table": table, "selection": selection}


def tables(result: dict[str, Any], data: RankingData) -> list[dict[str, Any]]:
    columns = ["model", "test_hr@10", "test_ndcg@10", "test_auc", "test_weighted_per_user_loss"] + [
        f"test_{m}@{k}" for k in FULL_KS for m in ("recall", "ndcg_full")] + ["validation_hr@10", "epochs",
                                                                            "train_s"]
    selection_columns = sorted({key for row in result["selection"] for key in row},
                               key=lambda key: (key != "model", key.startswith("validation"), key))
    return [
        {"title": f"ml-100k, NCF protocol: {len(data.test)} test users, 99 sampled negatives each, "
                  f"{len(data.space.catalog.item_ids)} items in the full ranking", "columns": columns,
         "rows": result["table"]},
        {"title": "Hyper-parameter selection on the validation hold-out", "columns": selection_columns,
         "rows": result["selection"]},
    ]


def load(data_dir: pathlib.Path, quick: bool) -> tuple[RankingData, Config]:
    overrides: dict[str, Any] = {"data.source": "ml-100k", "data.data_dir": str(data_dir), "data.download": False,
                                 **(QUICK_BASE if quick else BASE)}
    config = load_config(None, overrides)
    return ncf_protocol(load_dataset(config.data, config.synthetic), config), config


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    add_data_dir(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    result = SectionResult("ncf_table", args.quick)
    missing = missing_ml_100k(args.data_dir)
    if missing is not None:
        result.payload["skipped"] = missing
        result.write(args.out)
        return
    data, config = load(args.data_dir, args.quick)
    figures = run(data, config, args.quick)
    result.payload.update({
        "baseline": "ItemPop (training-set popularity) on the same split and negatives",
        "anchors_ml1m": {"neumf": {"hr@10": 0.730, "ndcg@10": 0.447}, "mf": {"hr@10": 0.729, "ndcg@10": 0.452}},
        "notes": [
            ("Every model is trained on the same events and scored on the same test items and negatives;"
             " hyper-parameters are chosen on the validation hold-out, never on the test."),
            ("Published ml-1m anchors (He et al. 2017; Rendle et al. 2020) are for orientation: ml-100k is"
             " ~10x smaller."),
            ("full = NeuMF + the YouTube ranking features (no retrieval score: the retrieval model is trained"
             " on the temporal split, not on this one)."),
        ],
        "tables": tables(figures, data),
        "rows": figures["table"],
    })
    result.write(args.out)


def _validation_only(row: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in row.items() if not key.startswith("test_")}


def _with_unknown_rows(factors: np.ndarray) -> np.ndarray:
    factors = np.asarray(factors, dtype=np.float32)
    return np.concatenate([np.zeros((2, factors.shape[1]), np.float32), factors])


if __name__ == "__main__":
    main()
