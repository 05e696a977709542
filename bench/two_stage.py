"""Two-stage recommendation against retrieval alone, end to end on the temporal split.

`python -m bench.two_stage --out FILE.json [--quick] [--data-dir DIR] [--parts ml-100k,synthetic]`

For each dataset and seed (the config's `seed`: model initialisation, shuffling, sampled negatives) the
candidate generator is trained (`trainer.retrieval.train.train_retrieval`), then the default ranking model
(`ranking.model`, "full": NeuMF with the YouTube features and the retrieval score as a feature) on the
temporal split (`trainer.ranking.train.train_model`), as `train_ranking` does; the NCF-protocol comparison
table of `ranking.compare` is not trained. `trainer.ranking.two_stage.evaluate_two_stage` then scores, for
every test user, retrieval's top `ranking.rerank_candidates` items (watched items excluded) in retrieval
order (the baseline) and re-ranked by the ranking model, against what the user watched in the test period:
full-corpus Recall@K and NDCG@K, and watch-time recall@K (the share of the user's test-period watch time
held by the top K, what a ranker trained for expected watch time aims at), K = 10, 50.

- ml-100k (configs/movielens-100k.yaml): 3 seeds (--quick: 1, with 2 epochs per model); per seed and the
  median of each figure, and the two-stage / retrieval-only ratio (of the medians, and the median and range
  of the per-seed ratios). Without the data folder this part is skipped.
- synthetic (configs/default.yaml): 1 seed (--quick: a small synthetic config, 2 epochs per model).
Runs are written to a temporary folder; nothing is exported.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bench.cli import SectionResult, add_data_dir, missing_ml_100k, section_parser
from bench.harness import REPO_ROOT

if TYPE_CHECKING:
    from trainer.config import Config
    from trainer.data.bundle import TrainingData
    from trainer.ranking.protocol import FullRankingSet
    from trainer.run import RunContext

ML_100K, SYNTHETIC = "ml-100k", "synthetic"
PARTS = (ML_100K, SYNTHETIC)
CONFIG_FILES = {ML_100K: REPO_ROOT / "configs" / "movielens-100k.yaml",
                SYNTHETIC: REPO_ROOT / "configs" / "default.yaml"}
SEEDS = {ML_100K: 3, SYNTHETIC: 1}
KS = (10, 50)
FIGURES = tuple(f"{metric}@{k}" for metric in ("recall", "ndcg_full", "watch_time_recall") for k in KS)
BASELINE, TWO_STAGE, PLANTED = "retrieval_only", "two_stage", "planted"
QUICK_OVERRIDES: dict[str, Any] = {"retrieval.epochs": 2, "ranking.epochs": 2}
QUICK_SYNTHETIC: dict[str, Any] = {"synthetic.num_users": 400, "synthetic.num_items": 300,
                                   "synthetic.events_per_user": 20}


def load_part_config(part: str, data_dir: pathlib.Path, quick: bool) -> Config:
    """The run config of one part: its YAML file, the evaluation cut-offs, and the --quick sizes."""
    from trainer.config import load_config

    overrides: dict[str, Any] = {"ranking.eval_ks": list(KS), "ranking.compare": []}
    if part == ML_100K:
        overrides.update({"data.data_dir": str(data_dir), "data.download": False})
    if quick:
        overrides.update(QUICK_OVERRIDES)
        if part == SYNTHETIC:
            overrides.update(QUICK_SYNTHETIC)
    return load_config(CONFIG_FILES[part], overrides)


def missing_data(part: str, data_dir: pathlib.Path) -> str | None:
    """Why `part` cannot run here (None when it can): only ml-100k needs files."""
    return missing_ml_100k(data_dir) if part == ML_100K else None


def measure_seed(config: Config, data: TrainingData, run: RunContext) -> dict[str, Any]:
    """Trains both stages with `config.seed` and evaluates retrieval alone and retrieval + re-ranking.

    Returns:
        seed, the figures of evaluate_two_stage, test_users, ranking_epochs and the stage times (s).
    """
    from trainer.ranking import retrieval_feature, two_stage
    from trainer.ranking.protocol import temporal_protocol
    from trainer.ranking.train import train_model
    from trainer.retrieval.train import train_retrieval

    start = time.perf_counter()
    retrieval = train_retrieval(config, data, run)
    retrieval_s = time.perf_counter() - start
    temporal = temporal_protocol(data, config)
    if temporal.full_ranking is None:
        raise RuntimeError(f"{data.dataset.name}: the temporal split has no test users to rank")
    scorer = retrieval_feature.scorer_for(retrieval)
    model, history = train_model(config.ranking.model, temporal, config, run=run, retrieval_scorer=scorer)
    ranking_s = time.perf_counter() - start - retrieval_s
    retriever = retrieval_feature.retriever_for(retrieval)
    figures = two_stage.evaluate_two_stage(retriever, model, temporal.full_ranking, config.ranking.rerank_candidates,
                                           list(KS))
    if data.dataset.ground_truth is not None:
        candidates = two_stage.candidates_after_exclusion(retriever, temporal.full_ranking,
                                                          config.ranking.rerank_candidates)
        figures.update(two_stage.list_metrics(
            PLANTED, planted_order(data.dataset.ground_truth, temporal.full_ranking, candidates),
            temporal.full_ranking, list(KS)))
    return {"seed": config.seed, **figures, "test_users": len(temporal.full_ranking),
            "ranking_epochs": len(history.get("loss", [])), "retrieval_s": round(retrieval_s, 1),
            "ranking_s": round(ranking_s, 1),
            "evaluate_s": round(time.perf_counter() - start - retrieval_s - ranking_s, 1)}


def planted_order(truth: Any, full: FullRankingSet, candidates: np.ndarray) -> np.ndarray:
    """The candidates [U, C] ordered by the planted model's true affinities (synthetic data's ceiling for any
    re-ranking of these candidates; padding last)."""
    affinity = truth.scores(full.contexts["user_id"])
    columns = pd.Index(truth.item_ids).get_indexer(candidates.ravel()).reshape(candidates.shape)
    scores = np.where(columns >= 0, np.take_along_axis(affinity, np.maximum(columns, 0), axis=1), -np.inf)
    return np.take_along_axis(candidates, np.argsort(-scores, axis=1, kind="stable"), axis=1)


def run_part(config: Config, seeds: int, work_dir: pathlib.Path) -> list[dict[str, Any]]:
    """One row per seed (config.seed, config.seed + 1, ...), the data prepared once."""
    from trainer.data.bundle import prepare
    from trainer.run import RunContext

    data = prepare(config)
    rows = []
    for offset in range(seeds):
        seeded = dataclasses.replace(config, seed=config.seed + offset)
        rows.append(measure_seed(seeded, data, RunContext(work_dir / f"seed_{seeded.seed}")))
        logging.getLogger("trainer").info("two_stage %s seed %d: %s", data.dataset.name, seeded.seed, rows[-1])
    return rows


def ratio(numerator: float, denominator: float) -> float | None:
    """numerator / denominator, None when the denominator is 0."""
    return float(numerator) / float(denominator) if denominator else None


def summarise(rows: Sequence[Mapping[str, Any]], figures: Sequence[str] = FIGURES) -> list[dict[str, Any]]:
    """One row per figure over the seeds: the medians of both systems, and two_stage / retrieval_only.

    Args:
        rows: per-seed rows holding retrieval_only_<figure> and two_stage_<figure>.
        figures: e.g. recall@10.

    Returns:
        figure, retrieval_only and two_stage (medians), ratio_of_medians, median_ratio, min_ratio,
        max_ratio (of the per-seed ratios; None where retrieval alone scored 0), two_stage_better
        ("wins/seeds"), seeds.
    """
    out = []
    for figure in figures:
        alone = np.array([row[f"{BASELINE}_{figure}"] for row in rows], dtype=np.float64)
        both = np.array([row[f"{TWO_STAGE}_{figure}"] for row in rows], dtype=np.float64)
        ratios = np.array([r for a, b in zip(alone, both) if (r := ratio(b, a)) is not None])
        out.append({
            "figure": figure,
            BASELINE: float(np.median(alone)),
            TWO_STAGE: float(np.median(both)),
            "ratio_of_medians": ratio(np.median(both), np.median(alone)),
            "median_ratio": float(np.median(ratios)) if len(ratios) else None,
            "min_ratio": float(ratios.min()) if len(ratios) else None,
            "max_ratio": float(ratios.max()) if len(ratios) else None,
            "two_stage_better": f"{int(np.sum(both > alone))}/{len(rows)}",
            "seeds": len(rows),
        })
    return out


def median_row(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dict[str, Any]:
    """The median over the rows of each numeric column (the row's `seed` cell reads "median")."""
    return {"seed": "median", **{c: float(np.median([row[c] for row in rows])) for c in columns if c != "seed"}}


def per_seed_columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The per-seed table's columns; the planted model's ceiling only where the data has one (synthetic)."""
    systems = (BASELINE, TWO_STAGE, PLANTED) if all(f"{PLANTED}_{FIGURES[0]}" in row for row in rows) else (
        BASELINE, TWO_STAGE)
    pairs = [f"{system}_{figure}" for figure in FIGURES for system in systems]
    return ["seed", *pairs, "two_stage_candidate_recall", "ranking_epochs", "retrieval_s", "ranking_s"]


def tables(parts: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per part: the summary (medians and ratios) and the per-seed figures with their median."""
    out = []
    for part, result in parts.items():
        if "skipped" in result:
            continue
        rows, seeds = result["per_seed"], len(result["per_seed"])
        out.append({"title": f"{part}: retrieval alone against two-stage (median of {seeds} seed(s), "
                             f"{result['test_users']} test users, {result['candidates']} candidates)",
                    "columns": ["figure", BASELINE, TWO_STAGE, "ratio_of_medians", "median_ratio", "min_ratio",
                                "max_ratio", "two_stage_better"],
                    "rows": result["summary"]})
        columns = per_seed_columns(rows)
        out.append({"title": f"{part}: per seed",
                    "columns": columns,
                    "rows": [*rows, median_row(rows, columns)] if seeds > 1 else rows})
    return out


def notes(parts: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """What the figures mean, and the headline of each part measured."""
    out = [
        "Both systems rank the same candidates for the same test users: retrieval's top "
        "`ranking.rerank_candidates` items after the user's watched items are removed; retrieval alone keeps "
        "retrieval's order, two-stage orders them by the ranking model (`full`: NeuMF + YouTube features + the "
        "retrieval score). two_stage_candidate_recall (recall of the whole candidate list) bounds both.",
        "The ranker is trained by watch-time-weighted logistic regression, for expected watch time: "
        "watch_time_recall@K (the share of each user's test-period watch time held by the top K) is what it "
        "aims at, while recall@K and ndcg_full@K count every watch alike. ml-100k has no watch time; its "
        "documented proxy is rating / 5 (trainer/data/movielens.py), so there watch_time_recall weighs "
        "well-rated movies more.",
        "The synthetic logs are planted as a pure latent dot product plus an item bias (trainer/data/synthetic.py), "
        "i.e. exactly the two-tower model class: for which items a user watches, the ranker has no information "
        "that retrieval lacks; how long they watch depends on each item's duration, which retrieval does not "
        "model. planted_<figure> orders the same candidates by the planted model's own affinities: the ceiling "
        "of any re-ranking of them for which items are watched.",
    ]
    for part, result in parts.items():
        if "skipped" in result:
            continue
        cells = [f"{row['figure']} {row[TWO_STAGE]:.3f} vs {row[BASELINE]:.3f} ({_ratio_text(row)})"
                 for row in result["summary"]]
        out.append(f"{part}: two-stage vs retrieval alone: " + "; ".join(cells) + ".")
        planted = [f"{figure} {np.median([row[f'{PLANTED}_{figure}'] for row in result['per_seed']]):.3f}"
                   for figure in FIGURES if all(f"{PLANTED}_{figure}" in row for row in result["per_seed"])]
        if planted:
            out.append(f"{part}: the same candidates ordered by the planted model: " + "; ".join(planted) + ".")
    return out


def _ratio_text(row: Mapping[str, Any]) -> str:
    if row["seeds"] == 1:
        return f"ratio {_fmt_ratio(row['median_ratio'])}, one seed"
    return (f"median ratio {_fmt_ratio(row['median_ratio'])}, range {_fmt_ratio(row['min_ratio'])}–"
            f"{_fmt_ratio(row['max_ratio'])}, better in {row['two_stage_better']} seeds")


def _fmt_ratio(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def measure_part(part: str, data_dir: pathlib.Path, quick: bool, work_dir: pathlib.Path) -> dict[str, Any]:
    """The per-seed rows and their summary for one part."""
    config = load_part_config(part, data_dir, quick)
    rows = run_part(config, 1 if quick else SEEDS[part], work_dir / part)
    return {
        "config": {"file": str(CONFIG_FILES[part].relative_to(REPO_ROOT)), "quick": quick,
                   "ranking_model": config.ranking.model, "retrieval_epochs": config.retrieval.epochs,
                   "ranking_epochs": config.ranking.epochs},
        "test_users": rows[0]["test_users"],
        "candidates": config.ranking.rerank_candidates,
        "per_seed": rows,
        "summary": summarise(rows),
    }


def parse_parts(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(PARTS))
    if unknown or not names:
        raise ValueError(f"unknown part(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(PARTS)}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    args = parser.parse_args(argv)
    try:
        selected = parse_parts(args.parts)
    except ValueError as error:
        parser.error(str(error))
    result = SectionResult("two_stage", args.quick)
    skipped = {part: reason for part in selected if (reason := missing_data(part, args.data_dir))}
    if len(skipped) == len(selected):
        result.payload["skipped"] = "; ".join(f"{part}: {reason}" for part, reason in skipped.items())
        result.write(args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parts: dict[str, dict[str, Any]] = {part: {"skipped": reason} for part, reason in skipped.items()}
    with tempfile.TemporaryDirectory(prefix="bench_two_stage_") as folder:
        for part in selected:
            if part not in skipped:
                parts[part] = measure_part(part, args.data_dir, args.quick, pathlib.Path(folder))
    result.payload.update({
        "baseline": "retrieval alone: the same candidates for the same users in retrieval order (same run, same "
                    "trained retrieval model)",
        "parts": parts,
        "tables": tables(parts),
        "notes": notes(parts),
    })
    if skipped:
        result.payload["skipped_parts"] = skipped
    result.write(args.out)


if __name__ == "__main__":
    main()
