"""EASE (Steck, WWW 2019) as a peer baseline under the NCF protocol: closed form, NumPy only.

`python -m bench.ease --out FILE.json [--quick] [--data-dir DIR]`

EASE learns an item-item weight matrix B = argmin ||X - XB||² + λ||B||² with diag(B) = 0, whose closed form
is B = I - P / diag(P) with P = (XᵀX + λI)⁻¹; a user's scores are x_u B. It is the strongest simple
baseline of the implicit-feedback literature and trains in well under a second on MovieLens-100k.

Protocol (as trainer.ranking.protocol.ncf_protocol builds it for the NCF models): the outer split is
`leave_last_out(events, data.eval_negatives, data.seed)` (test: each user's latest event and 99 sampled
negatives), the inner split `leave_last_out(outer.train, ..., data.seed + 1)` is the validation set. EASE
is fitted on the inner training events (the data the neural models train on), λ is chosen on the
validation HR@10, and each test user is scored from all their events before the test event. Figures:
HR@10 and NDCG@10 against the sampled negatives (ties count against the target), and full-corpus Recall@K
and NDCG@K with the user's earlier items excluded. ItemPop (training counts) on the same split is the
baseline of the same run; on the synthetic data the planted model's own scores are the ceiling.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.cli import SectionResult, add_data_dir, missing_ml_100k, section_parser
from trainer import metrics

L2_GRID = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0)
QUICK_L2_GRID = (100.0, 500.0)
FULL_KS = (10, 50)
SAMPLED_K = 10


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """Held-out events to score.

    Attributes:
        history: [U, I] float32, each user's events before the held-out one (1 = interacted).
        targets: [U] int, the held-out item's column.
        negatives: [U, N] int, the sampled negatives' columns.
        user_ids: [U] the users, in row order.
    """

    history: np.ndarray
    targets: np.ndarray
    negatives: np.ndarray
    user_ids: np.ndarray


def interaction_matrix(events: pd.DataFrame, users: Sequence[str], item_index: pd.Index) -> np.ndarray:
    """[len(users), len(item_index)] float32 with 1 where the user has an event with the item."""
    matrix = np.zeros((len(users), len(item_index)), dtype=np.float32)
    rows = pd.Index(users).get_indexer(events["user_id"])
    cols = item_index.get_indexer(events["item_id"])
    keep = (rows >= 0) & (cols >= 0)
    matrix[rows[keep], cols[keep]] = 1.0
    return matrix


def ease_weights(interactions: np.ndarray, l2: float) -> np.ndarray:
    """The EASE item-item matrix.

    Args:
        interactions: X [U, I] (binary).
        l2: λ > 0.

    Returns:
        B [I, I] float64 with a zero diagonal.
    """
    if l2 <= 0:
        raise ValueError(f"EASE needs l2 > 0, got {l2}")
    gram = interactions.T.astype(np.float64) @ interactions.astype(np.float64)
    gram[np.diag_indices_from(gram)] += l2
    precision = np.linalg.inv(gram)
    weights = -precision / np.diag(precision)[None, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def make_eval_set(history_events: pd.DataFrame, held_out: pd.DataFrame, negatives: np.ndarray,
                  item_index: pd.Index) -> EvalSet:
    """The held-out rows (one per user) with their histories and negatives as item columns."""
    users = held_out["user_id"].to_numpy()
    return EvalSet(
        history=interaction_matrix(history_events, list(users), item_index),
        targets=item_index.get_indexer(held_out["item_id"]),
        negatives=item_index.get_indexer(np.asarray(negatives).ravel()).reshape(np.shape(negatives)),
        user_ids=users,
    )


def evaluate(scores: np.ndarray, eval_set: EvalSet) -> dict[str, float]:
    """Sampled HR/NDCG@10 and full-corpus Recall/NDCG@K (earlier items excluded). Args: scores [U, I]."""
    rows = np.arange(len(scores))[:, None]
    ranks = metrics.rank_of_target(scores[rows[:, 0], eval_set.targets], scores[rows, eval_set.negatives])
    result = {f"hr@{SAMPLED_K}": metrics.hit_rate_at_k(ranks, SAMPLED_K),
              f"ndcg@{SAMPLED_K}": metrics.ndcg_at_k_single(ranks, SAMPLED_K)}
    masked = np.where(eval_set.history > 0, -np.inf, scores)
    top = np.argsort(-masked, axis=1, kind="stable")[:, : max(FULL_KS)].astype(str).tolist()
    relevant = [[str(t)] for t in eval_set.targets]
    for k in FULL_KS:
        result[f"recall@{k}"] = metrics.recall_at_k(top, relevant, k)
        result[f"ndcg_full@{k}"] = metrics.ndcg_at_k(top, relevant, k)
    return result


def run_dataset(dataset: Any, config: Any, l2_grid: Sequence[float], name: str) -> dict[str, Any]:
    """EASE (λ chosen on validation), ItemPop and, for synthetic data, the planted ceiling on one dataset."""
    from trainer.data.splits import leave_last_out

    outer = leave_last_out(dataset.events, config.data.eval_negatives, config.data.seed)
    inner = leave_last_out(outer.train, config.data.eval_negatives, config.data.seed + 1)
    item_index = pd.Index(dataset.items["item_id"].astype(str).unique())
    fit_users = sorted(inner.train["user_id"].unique())
    fit_matrix = interaction_matrix(inner.train, fit_users, item_index)
    validation = make_eval_set(inner.train, inner.test, inner.negatives, item_index)
    test = make_eval_set(outer.train, outer.test, outer.negatives, item_index)
    selection = []
    for l2 in l2_grid:
        start = time.perf_counter()
        weights = ease_weights(fit_matrix, l2)
        fit_s = time.perf_counter() - start
        selection.append({"l2": l2, "fit_s": round(fit_s, 3),
                          **_prefixed("validation_", evaluate(validation.history @ weights, validation))})
    best = max(selection, key=lambda row: (row[f"validation_hr@{SAMPLED_K}"], row[f"validation_ndcg@{SAMPLED_K}"]))
    weights = ease_weights(fit_matrix, best["l2"])
    popularity = fit_matrix.sum(axis=0, keepdims=True)
    rows = [
        {"model": f"EASE (λ={best['l2']:g})", **_prefixed("test_", evaluate(test.history @ weights, test))},
        {"model": "ItemPop",
         **_prefixed("test_", evaluate(np.repeat(popularity, len(test.targets), axis=0), test))},
    ]
    truth = getattr(dataset, "ground_truth", None)
    if truth is not None:
        planted = truth.scores(list(test.user_ids))[:, pd.Index(truth.item_ids).get_indexer(item_index)]
        rows.append({"model": "planted model (ceiling)", **_prefixed("test_", evaluate(planted, test))})
    return {
        "dataset": name,
        "users": len(test.targets),
        "items": len(item_index),
        "training_events": len(inner.train),
        "rows": rows,
        "l2_selection": selection,
    }


def _prefixed(prefix: str, figures: dict[str, float]) -> dict[str, float]:
    """Metric names as bench.ncf_table writes them (test_hr@10, validation_ndcg@10, ...)."""
    return {prefix + name: value for name, value in figures.items()}


def load(source: str, data_dir: pathlib.Path, quick: bool) -> tuple[Any, Any]:
    """The dataset and its config (ml-100k from `data_dir`, or the default synthetic logs)."""
    from trainer.config import load_config
    from trainer.data.sources import load_dataset

    overrides: dict[str, Any] = {"data.source": source}
    if source != "synthetic":
        overrides.update({"data.data_dir": str(data_dir), "data.download": False})
    elif quick:
        overrides.update({"synthetic.num_users": 400, "synthetic.num_items": 300, "synthetic.events_per_user": 20})
    config = load_config(None, overrides)
    return load_dataset(config.data, config.synthetic), config


def tables(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    columns = ["model", f"test_hr@{SAMPLED_K}", f"test_ndcg@{SAMPLED_K}"] + [
        f"test_{m}@{k}" for k in FULL_KS for m in ("recall", "ndcg_full")]
    out = []
    for result in results:
        out.append({"title": f"{result['dataset']}: NCF protocol ({result['users']:,} test users, "
                             f"{result['items']:,} items)", "columns": columns, "rows": result["rows"]})
        out.append({"title": f"{result['dataset']}: EASE λ selection on the validation split",
                    "columns": ["l2", "fit_s", f"validation_hr@{SAMPLED_K}", f"validation_ndcg@{SAMPLED_K}"],
                    "rows": result["l2_selection"]})
    return out


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    add_data_dir(parser)
    args = parser.parse_args(argv)
    result = SectionResult("ease", args.quick)
    grid = QUICK_L2_GRID if args.quick else L2_GRID
    results = []
    missing = missing_ml_100k(args.data_dir)
    if missing is None:
        results.append(run_dataset(*load("ml-100k", args.data_dir, args.quick), grid, "ml-100k"))
    else:
        result.payload["skipped_parts"] = {"ml-100k": missing}
    results.append(run_dataset(*load("synthetic", args.data_dir, args.quick), grid, "synthetic"))
    result.payload.update({
        "baseline": "ItemPop (training-set popularity) on the same split; synthetic: the planted model (ceiling)",
        "tables": tables(results),
    })
    result.write(args.out)


if __name__ == "__main__":
    main()
