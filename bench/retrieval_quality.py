"""Retrieval quality on ml-100k: feature ablations on the temporal split, and the TFRS tutorial protocol.

`python -m bench.retrieval_quality --out FILE.json [--quick] [--data-dir DIR]`

- Temporal split (10% validation, 10% test by time): full-corpus Recall@K / NDCG@K (K = 10, 50, 100)
  over the items each test user had not seen, for the ablations id_only, +history, +search,
  +demographics and all (trainer.retrieval.ablation), each trained from scratch with early stopping
  on validation recall@100. Baseline: the most-watched unseen items (popularity), same requests.
- TFRS tutorial protocol (random 80/20 split, FactorizedTopK top-K accuracy over all items, no
  exclusions): the basic tutorial's ID-only model (trained as the tutorial does: Adagrad 0.1, batch
  8192, 3 epochs) and the candidate generator, trained in the same run on the same split.
--quick: two ablations (id_only, all) with 2 epochs, and 2 generator epochs on the tutorial protocol.
The data folder defaults to <repo>/../shared/data/ml-100k; without it the section is skipped.
"""

from __future__ import annotations

import logging
import pathlib
import tempfile
from typing import Any

from bench.cli import SectionResult, add_data_dir, missing_ml_100k, section_parser

KS = (10, 50, 100)
FULL = {"retrieval.epochs": 8, "retrieval.early_stopping_patience": 3}
QUICK = {"retrieval.epochs": 2, "retrieval.early_stopping_patience": 0}
QUICK_ABLATIONS = ("id_only", "all")
TUTORIAL_REPORTED = {"tutorial basic (reported)": 0.23, "tutorial deep (reported)": 0.29}


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    add_data_dir(parser)
    args = parser.parse_args(argv)
    result = SectionResult("retrieval_quality", args.quick)
    missing = missing_ml_100k(args.data_dir)
    if missing is not None:
        result.payload["skipped"] = missing
    else:
        result.payload.update(measure(args.data_dir, args.quick))
    result.write(args.out)


def measure(data_dir: pathlib.Path, quick: bool) -> dict[str, Any]:
    """Trains the ablations and both tutorial-protocol models; the section's figures."""
    from bench.ablation import ABLATIONS, run_ablations
    from bench.tutorial import run_tutorial_protocol
    from trainer.config import load_config
    from trainer.data.bundle import prepare
    from trainer.run import RunContext

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    overrides = {"data.source": "ml-100k", "data.data_dir": str(data_dir), "data.download": False,
                 "retrieval.eval_ks": list(KS), "retrieval.early_stopping_k": 100, **(QUICK if quick else FULL)}
    config = load_config(None, overrides)
    data = prepare(config)
    names = QUICK_ABLATIONS if quick else tuple(ABLATIONS)
    with tempfile.TemporaryDirectory() as folder:
        ablations = run_ablations(config, data, RunContext(pathlib.Path(folder)), names)
    tutorial = run_tutorial_protocol(config, data.dataset, logging.getLogger("trainer"))
    temporal = temporal_rows(ablations)
    return {
        "baseline": "popularity (most-watched unseen items) on the same temporal requests; the TFRS basic-tutorial "
                    "model trained in the same run on the same random split",
        "config": {"retrieval": config.to_dict()["retrieval"], "data": config.to_dict()["data"]},
        "temporal": {"test_users": ablations[0]["test_users"], "rows": temporal},
        "tutorial_protocol": tutorial,
        "tables": [
            {"title": "Temporal split, test period: full-corpus recall / NDCG over unseen items",
             "columns": ["ablation", *[f"recall@{k}" for k in KS], *[f"ndcg@{k}" for k in KS], "epochs_trained",
                         "dropped"],
             "rows": temporal},
            {"title": "TFRS tutorial protocol (random 80/20): FactorizedTopK top-K accuracy",
             "columns": ["model", "top_10_accuracy", "top_50_accuracy", "top_100_accuracy"],
             "rows": tutorial_rows(tutorial)},
        ],
        "notes": [
            "ml-100k has no search queries, so search_history is dropped and +search equals +history.",
            (f"{int(ablations[0]['test_users'])} users have unseen items in the test period (the temporal split "
            "keeps the latest 10% of events; many of those users are new, so their id is unknown to the model)."),
            "Tutorial figures as reported by the TFRS tutorials: basic 0.23, deep 0.29 top-100 accuracy.",
        ],
    }


def temporal_rows(ablations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per ablation plus the popularity baseline (the same for every ablation)."""
    rows = [{"ablation": row["ablation"], **{m: row[m] for m in _metric_names()},
             "epochs_trained": int(row["epochs_trained"]), "dropped": row["dropped"]} for row in ablations]
    popularity = {m: ablations[0][f"popularity_{m}"] for m in _metric_names()}
    return rows + [{"ablation": "popularity", **popularity, "epochs_trained": 0, "dropped": ""}]


def tutorial_rows(tutorial: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = [{"model": name, **figures} for name, figures in tutorial.items()]
    return rows + [{"model": name, "top_100_accuracy": value} for name, value in TUTORIAL_REPORTED.items()]


def _metric_names() -> list[str]:
    return [f"{metric}@{k}" for metric in ("recall", "ndcg") for k in KS]


if __name__ == "__main__":
    main()
