"""Quality on real data, end to end: the exported SavedModels against the peers a user would pick.

`python -m bench.quality --out FILE.json [--quick] [--data-dir DIR] [--seeds N] [--config FILE]`

On ml-100k, for each of two splits of the events:
- leave_last_out: each user's latest event is held out (`trainer.data.splits.leave_last_out`: events are
  ordered by timestamp, ties by item id as a string, so of two events in the same second the larger item
  id is the held-out one); its NCF-protocol negatives are that function's 99 items the user never rated.
- temporal: the last 10% of the log by time is held out (`trainer.data.splits.temporal_split`); each
  user with held-out items they had not rated before is evaluated on all of them, and for the NCF protocol
  on the earliest of them against 99 sampled items the user never rated.

`python -m trainer.task` (in process, `run_task`) trains on the training events only (written as an ml-100k
folder) with `--config` (configs/movielens-100k.yaml); the exported `retrieval` (ScaNN) and `ranking`
SavedModels are then loaded the way TF Serving runs them (`serving.session_model.SessionModel`: the serve
MetaGraph in a session, SignatureDefs fed by name) and queried as `serving.client` does: the user's
requests carry their whole history as `watch_history` (most recent last), retrieval returns K unseen
candidates, ranking re-scores them (two-stage). The peers train on the same training events, each
tuned by a small grid on a validation split cut from the training events the same way (leave the last
training event out, or the last 10% of the training period): popularity, EASE (`bench.ease`), implicit
ALS and BPR, and the TFRS basic and deep tutorial models (`trainer.retrieval.tutorial`; the deep one
with [64, 32] towers over the id embeddings, the tutorial's timestamp and title features left out).

Metrics over the catalogue, items the user rated before excluded: Recall@10, Recall@100, NDCG@10; NCF
protocol (the held-out item among 99 sampled negatives): HR@10, NDCG@10 (the two-stage row is the
`ranking` model's order of those 100 items; retrieval alone cannot score given items). Each figure is the
median over seeds (model initialisation and sampling; the split is fixed) with its min and max.
--quick: one seed, 150 users, one epoch per model, one grid point per peer.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.cli import SectionResult, add_data_dir, missing_ml_100k, section_parser
from bench.ease import ease_weights, interaction_matrix
from bench.harness import REPO_ROOT

CONFIG_FILE = REPO_ROOT / "configs" / "movielens-100k.yaml"
SPLITS = ("leave_last_out", "temporal")
TEMPORAL_FRACTION = 0.1
NEGATIVES = 99
SPLIT_SEED = 42
SEEDS = 3
QUICK_USERS = 150
FIGURES = ("recall@10", "recall@100", "ndcg@10", "ncf_hr@10", "ncf_ndcg@10")
RETRIEVAL, TWO_STAGE = "retrieval (exported ScaNN)", "two-stage (retrieval + ranking)"
EASE_GRID = (100.0, 200.0, 500.0, 1000.0)
ALS_GRID = [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f in (64, 128) for r in (0.01, 0.1) for a in (1.0, 10.0)]
BPR_GRID = [{"factors": f, "learning_rate": lr, "regularization": 0.01, "iterations": 100}
            for f in (64, 128) for lr in (0.01, 0.05)]
TUTORIAL_EPOCHS = (3, 10)  # the tutorial trains 3; each epoch is a softmax over 8,192 x 8,192 logits per step
QUICK_GRIDS: dict[str, Any] = {"ease": (200.0,), "als": ALS_GRID[:1], "bpr": BPR_GRID[:1], "tutorial": (3,)}
FULL_GRIDS: dict[str, Any] = {"ease": EASE_GRID, "als": ALS_GRID, "bpr": BPR_GRID, "tutorial": TUTORIAL_EPOCHS}
QUICK_OVERRIDES: dict[str, Any] = {"retrieval.epochs": 1, "ranking.epochs": 1, "retrieval.eval_max_users": 100,
                                   "ranking.eval_max_examples": 200, "retrieval.embedding_dim": 16,
                                   "retrieval.tower_layers": [16], "ranking.embedding_dim": 8,
                                   "ranking.mlp_layers": [16, 8], "export.warmup_requests": 1, "export.refit": False}
LOGGER = logging.getLogger("bench.quality")
Scorer = Callable[[np.ndarray], np.ndarray]  # user row indices [U] -> scores [U, I]


@dataclasses.dataclass
class EvalSplit:
    """Training events and what is held out after them.

    Attributes:
        train: the events the systems learn from.
        users: [U] the evaluated users.
        relevant: [U] the held-out items each user had not rated before.
        targets: [U] the NCF-protocol item (one of `relevant`).
        negatives: [U, 99] the NCF-protocol negatives.
        request_time: [U] the request time of each user's query (the first held-out event's time).
    """

    train: pd.DataFrame
    users: np.ndarray
    relevant: list[frozenset[str]]
    targets: np.ndarray
    negatives: np.ndarray
    request_time: np.ndarray


def make_split(events: pd.DataFrame, kind: str, seed: int = SPLIT_SEED) -> EvalSplit:
    """The leave-last-out or the temporal split of `events` (see the module docstring)."""
    from trainer.data.splits import leave_last_out, sample_negatives, temporal_split

    if kind == "leave_last_out":
        split = leave_last_out(events, NEGATIVES, seed)
        held = split.test
        return EvalSplit(split.train, held["user_id"].to_numpy(dtype=object),
                         [frozenset([item]) for item in held["item_id"]], held["item_id"].to_numpy(dtype=object),
                         np.asarray(split.negatives, dtype=object), held["timestamp"].to_numpy(dtype=np.int64))
    if kind != "temporal":
        raise ValueError(f"unknown split {kind!r}; choose one of {', '.join(SPLITS)}")
    parts = temporal_split(events, 0.0, TEMPORAL_FRACTION)
    train = pd.concat([parts.train, parts.validation], ignore_index=True)
    seen = train.groupby("user_id")["item_id"].agg(frozenset)
    held = parts.test[parts.test["user_id"].isin(seen.index)].sort_values(["user_id", "timestamp", "item_id"])
    held = held[[item not in seen[user] for user, item in zip(held["user_id"], held["item_id"])]]
    first = held.drop_duplicates("user_id", keep="first")
    users = first["user_id"].to_numpy(dtype=object)
    relevant = held.groupby("user_id")["item_id"].agg(frozenset)
    everything = events.groupby("user_id")["item_id"].agg(frozenset)
    negatives = sample_negatives([everything[user] for user in users], np.sort(train["item_id"].unique()),
                                 NEGATIVES, np.random.default_rng(seed))
    return EvalSplit(train, users, [relevant[user] for user in users], first["item_id"].to_numpy(dtype=object),
                     np.asarray(negatives, dtype=object), first["timestamp"].to_numpy(dtype=np.int64))


def validation_split(split: EvalSplit, kind: str) -> EvalSplit:
    """The same kind of split cut from the training events: what the peers are tuned on."""
    return make_split(split.train, kind, SPLIT_SEED + 1)


def list_metrics(ranked: Sequence[Sequence[str]], split: EvalSplit) -> dict[str, float]:
    """Recall@10/@100 and NDCG@10 of ranked unseen item lists [U][<=100] against `split.relevant`."""
    from trainer import metrics

    lists = [[str(item) for item in row] for row in ranked]
    return {"recall@10": metrics.recall_at_k(lists, split.relevant, 10),
            "recall@100": metrics.recall_at_k(lists, split.relevant, 100),
            "ndcg@10": metrics.ndcg_at_k(lists, split.relevant, 10)}


def ncf_metrics(target_scores: np.ndarray, negative_scores: np.ndarray) -> dict[str, float]:
    """HR@10 and NDCG@10 of each target [U] among its negatives [U, 99] (ties count against the target)."""
    from trainer import metrics

    ranks = metrics.rank_of_target(target_scores, negative_scores)
    return {"ncf_hr@10": metrics.hit_rate_at_k(ranks, 10), "ncf_ndcg@10": metrics.ndcg_at_k_single(ranks, 10)}


@dataclasses.dataclass
class Matrix:
    """The training events as a user x item matrix over the whole catalogue (ml-100k's u.item)."""

    users: pd.Index
    items: pd.Index
    x: np.ndarray  # [U, I] float32, 1 where the user rated the item

    @classmethod
    def of(cls, train: pd.DataFrame, items: Sequence[str]) -> Matrix:
        users = pd.Index(sorted(train["user_id"].unique()))
        index = pd.Index([str(item) for item in items])
        return cls(users, index, interaction_matrix(train, list(users), index))


def score_matrix_metrics(scorer: Scorer, matrix: Matrix, split: EvalSplit) -> dict[str, float]:
    """Every figure of a peer that scores the whole catalogue: its top 100 unseen items and the NCF ranks."""
    rows = matrix.users.get_indexer(split.users)
    scores = np.asarray(scorer(rows), dtype=np.float64)
    masked = np.where(matrix.x[rows] > 0, -np.inf, scores)
    from trainer.metrics import top_k_indices

    top = top_k_indices(masked, 100)
    ranked = matrix.items.to_numpy()[top]
    columns = matrix.items.get_indexer(split.targets)
    negatives = matrix.items.get_indexer(split.negatives.ravel()).reshape(split.negatives.shape)
    line = np.arange(len(rows))
    return {**list_metrics(ranked.tolist(), split),
            **ncf_metrics(scores[line, columns], scores[line[:, None], negatives])}


def popularity_scorer(matrix: Matrix) -> Scorer:
    counts = matrix.x.sum(axis=0)
    return lambda rows: np.repeat(counts[None, :], len(rows), axis=0)


def ease_scorer(matrix: Matrix, l2: float) -> Scorer:
    weights = ease_weights(matrix.x, l2)
    return lambda rows: matrix.x[rows] @ weights


def implicit_scorer(matrix: Matrix, kind: str, params: Mapping[str, Any], seed: int) -> Scorer:
    """ALS or BPR of the `implicit` library fitted on the binary matrix; scores = user · item factors."""
    from implicit.cpu.als import AlternatingLeastSquares
    from implicit.cpu.bpr import BayesianPersonalizedRanking
    from scipy import sparse
    from threadpoolctl import threadpool_limits

    model: Any
    with threadpool_limits(1, "blas"):  # implicit's own threads do the work
        if kind == "als":
            model = AlternatingLeastSquares(**params, random_state=seed)
        else:
            model = BayesianPersonalizedRanking(**params, random_state=seed)
        model.fit(sparse.csr_matrix(matrix.x), show_progress=False)
    users, items = np.asarray(model.user_factors), np.asarray(model.item_factors)
    return lambda rows: users[rows] @ items.T


def tutorial_scorer(matrix: Matrix, deep: bool, epochs: int, seed: int) -> Scorer:
    """The TFRS basic (ids only) or deep ([64, 32] towers) tutorial model trained as the tutorial does."""
    import tensorflow as tf
    import tf_keras as keras

    from bench import tutorial
    from trainer.data.pipeline import make_dataset

    keras.utils.set_random_seed(seed)
    model = tutorial.TutorialModel(list(matrix.users), list(matrix.items))
    if deep:
        for tower in (model.user_model, model.item_model):
            tower.add(keras.layers.Dense(64, activation="relu"))
            tower.add(keras.layers.Dense(32))
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=tutorial.TUTORIAL_LEARNING_RATE))
    rows, columns = np.nonzero(matrix.x)  # the tutorials train on (user, item) event pairs
    pairs = {"user_id": matrix.users.to_numpy(dtype=str)[rows], "item_id": matrix.items.to_numpy(dtype=str)[columns]}
    model.fit(make_dataset(pairs, tutorial.TUTORIAL_BATCH, shuffle=True, seed=seed), epochs=epochs, verbose=0)
    users = model.user_model(tf.constant(list(matrix.users))).numpy()
    items = model.item_model(tf.constant(list(matrix.items))).numpy()
    return lambda rows: users[rows] @ items.T


def peer_factories(grids: Mapping[str, Any], seed: int) -> dict[str, list[tuple[str, Callable[[Matrix], Scorer]]]]:
    """Per peer, its grid points as (label, matrix -> scorer)."""
    tutorials = {"TFRS basic tutorial": False, "TFRS deep tutorial [64, 32]": True}
    factories: dict[str, list[tuple[str, Callable[[Matrix], Scorer]]]] = {
        "popularity": [("", popularity_scorer)],
        "EASE": [(f"λ={l2:g}", functools.partial(ease_scorer, l2=l2)) for l2 in grids["ease"]],
        "implicit ALS": [(_label(p), functools.partial(implicit_scorer, kind="als", params=p, seed=seed))
                         for p in grids["als"]],
        "implicit BPR": [(_label(p), functools.partial(implicit_scorer, kind="bpr", params=p, seed=seed))
                         for p in grids["bpr"]],
    }
    for name, deep in tutorials.items():
        factories[name] = [(f"epochs={e}", functools.partial(tutorial_scorer, deep=deep, epochs=e, seed=seed))
                           for e in grids["tutorial"]]
    return factories


def _label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in params.items())


def run_peers(split: EvalSplit, kind: str, items: Sequence[str], grids: Mapping[str, Any], seed: int
              ) -> dict[str, dict[str, Any]]:
    """Each peer tuned on the validation split (by NDCG@10), refitted on all training events and tested."""
    validation = validation_split(split, kind)
    inner, outer = Matrix.of(validation.train, items), Matrix.of(split.train, items)
    results = {}
    for name, points in peer_factories(grids, seed).items():
        started = time.perf_counter()
        chosen = points[0]
        if len(points) > 1:
            chosen = max(points, key=lambda point: score_matrix_metrics(point[1](inner), inner, validation)["ndcg@10"])
        results[name] = {"setting": chosen[0], **score_matrix_metrics(chosen[1](outer), outer, split),
                         "seconds": round(time.perf_counter() - started, 1)}
        LOGGER.info("quality %s seed %d %s (%s): %s", kind, seed, name, chosen[0], results[name])
    return results


def write_ml100k(folder: pathlib.Path, source: pathlib.Path, train: pd.DataFrame) -> None:
    """An ml-100k folder holding only the training events (u.data) and the source's item and user tables."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("u.item", "u.user", "u.genre", "u.occupation"):
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)
    table = pd.DataFrame({"user": train["user_id"], "item": train["item_id"],
                          "rating": train["rating"].round().astype(int),
                          "timestamp": train["timestamp"].astype(np.int64)})
    table.to_csv(folder / "u.data", sep="\t", header=False, index=False)


def requests(split: EvalSplit, dataset: Any, history_length: int) -> dict[str, np.ndarray]:
    """The serving inputs of every evaluated user: their whole training history, most recent last."""
    from trainer.data.examples import query_examples

    longest = int(split.train.groupby("user_id").size().max())
    features = query_examples(split.train, dataset.users, split.users, 0, max(longest, history_length), 1)
    features["request_time"] = split.request_time
    return features


def run_exported(export_dir: pathlib.Path, split: EvalSplit, dataset: Any, history_length: int, k: int,
                 batch: int = 256) -> dict[str, dict[str, float]]:
    """Retrieval alone and two-stage figures of the exported SavedModels, run as TF Serving runs them."""
    from serving.session_model import SessionModel

    features = requests(split, dataset, history_length)
    retrieval = SessionModel.load(_latest(export_dir / "retrieval"))
    ranking = SessionModel.load(_latest(export_dir / "ranking"))
    retrieval_inputs = set(retrieval.signature_def().inputs)
    ranking_inputs = set(ranking.signature_def().inputs)
    retrieved, reranked, target_scores, negative_scores = [], [], [], []
    seen = split.train.groupby("user_id")["item_id"].agg(frozenset)
    for start in range(0, len(split.users), batch):
        part = {name: values[start:start + batch] for name, values in features.items()}
        out = retrieval.run("serving_default", {n: v for n, v in part.items() if n in retrieval_inputs})
        for row, user in enumerate(split.users[start:start + batch]):
            items = [item.decode() for item in out["item_ids"][row] if item]
            retrieved.append([item for item in items if item not in seen[user]][:k])
        lists = retrieved[start:]
        width = max(len(items) for items in lists)
        candidates = np.array([items + [""] * (width - len(items)) for items in lists], dtype=object)
        user_part = {n: v for n, v in part.items() if n in ranking_inputs}
        scores = ranking.run("serving_default", {**user_part, "candidate_ids": candidates})["scores"]
        for row, items in enumerate(lists):
            order = np.argsort(-scores[row, :len(items)], kind="stable")
            reranked.append([items[i] for i in order])
        ncf = np.concatenate([split.targets[start:start + batch, None], split.negatives[start:start + batch]], axis=1)
        ncf_scores = ranking.run("serving_default", {**user_part, "candidate_ids": ncf})["scores"]
        target_scores.append(ncf_scores[:, 0])
        negative_scores.append(ncf_scores[:, 1:])
    retrieval.close()
    ranking.close()
    return {RETRIEVAL: list_metrics(retrieved, split),
            TWO_STAGE: {**list_metrics(reranked, split),
                        **ncf_metrics(np.concatenate(target_scores), np.concatenate(negative_scores))}}


def _latest(model_dir: pathlib.Path) -> pathlib.Path:
    versions = sorted((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    if not versions:
        raise FileNotFoundError(f"no exported version under {model_dir}")
    return versions[-1]


def train_and_export(config_file: pathlib.Path, data_dir: pathlib.Path, work: pathlib.Path, seed: int,
                     quick: bool) -> pathlib.Path:
    """`python -m trainer.task` (run_task) on the training-events folder; returns the export folder."""
    from trainer.config import load_config
    from trainer.task import run_task

    overrides: dict[str, Any] = {"data.data_dir": str(data_dir), "data.download": False, "seed": seed,
                                 "run_dir": str(work / "runs"), "export.output_dir": str(work / "saved_models"),
                                 "ranking.compare": []}
    if quick:
        overrides.update(QUICK_OVERRIDES)
    config = load_config(config_file, overrides)
    run_task(config, run_name=f"seed_{seed}")
    return pathlib.Path(config.export.output_dir)


def measure(data_dir: pathlib.Path, config_file: pathlib.Path, seeds: int, quick: bool, work: pathlib.Path,
            splits: Sequence[str] = SPLITS) -> dict[str, Any]:
    """Every system on each split, per seed."""
    from trainer.config import load_config
    from trainer.data.sources import load_dataset

    config = load_config(config_file, {"data.data_dir": str(data_dir), "data.download": False})
    dataset = load_dataset(config.data, config.synthetic)
    events = dataset.events
    if quick:
        keep = sorted(events["user_id"].unique(), key=int)[:QUICK_USERS]
        events = events[events["user_id"].isin(keep)].reset_index(drop=True)
    items = [str(item) for item in dataset.items["item_id"]]
    grids = QUICK_GRIDS if quick else FULL_GRIDS
    out: dict[str, Any] = {}
    for kind in splits:
        split = make_split(events, kind)
        folder = work / kind / "data"
        write_ml100k(folder, data_dir, split.train)
        per_seed = []
        for seed in range(config.seed, config.seed + seeds):
            export_dir = train_and_export(config_file, folder, work / kind / f"seed_{seed}", seed, quick)
            systems = run_exported(export_dir, split, dataset, config.data.history_length, config.export.max_k)
            LOGGER.info("quality %s seed %d exported models: %s", kind, seed, systems)
            systems.update(run_peers(split, kind, items, grids, seed))
            per_seed.append({"seed": seed, "systems": systems})
        out[kind] = {"users": len(split.users), "training_events": len(split.train), "per_seed": per_seed,
                     "summary": summarise(per_seed)}
    return out


def summarise(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """system -> figure -> {median, min, max} over the seeds."""
    systems = per_seed[0]["systems"]
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for system in systems:
        summary[system] = {}
        for figure in FIGURES:
            values = [row["systems"][system][figure] for row in per_seed if figure in row["systems"][system]]
            if values:
                summary[system][figure] = {"median": float(np.median(values)), "min": float(np.min(values)),
                                           "max": float(np.max(values))}
    return summary


def targets(summary: Mapping[str, Mapping[str, Mapping[str, float]]]) -> list[dict[str, Any]]:
    """The issue's targets on one split: each with our figure, the bar and whether it is met."""
    def median(system: str, figure: str) -> float:
        return summary[system][figure]["median"]

    checks = [(TWO_STAGE, "recall@10", "EASE", 1.03), (TWO_STAGE, "ndcg@10", "EASE", 1.03),
              (TWO_STAGE, "ncf_hr@10", "EASE", 1.03), (RETRIEVAL, "recall@100", "implicit ALS", 1.0),
              (RETRIEVAL, "recall@100", "TFRS deep tutorial [64, 32]", 1.0)]
    rows = []
    for system, figure, peer, factor in checks:
        ours, bar = median(system, figure), factor * median(peer, figure)
        met = ours >= bar if factor > 1 else ours > bar
        rows.append({"target": f"{system} {figure} {'>=' if factor > 1 else '>'} {factor:g} x {peer}",
                     "ours": ours, "bar": bar, "ratio": ours / bar if bar else None, "met": met})
    return rows


def tables(result: Mapping[str, Any], seeds: int) -> list[dict[str, Any]]:
    out = []
    for kind, part in result.items():
        rows = []
        for system, figures in part["summary"].items():
            row: dict[str, Any] = {"system": system}
            for figure in FIGURES:
                cell = figures.get(figure)
                row[figure] = "–" if cell is None else (
                    f"{cell['median']:.4f}" if seeds == 1 else
                    f"{cell['median']:.4f} [{cell['min']:.4f}–{cell['max']:.4f}]")
            rows.append(row)
        out.append({"title": f"ml-100k {kind}: {part['users']} test users, {part['training_events']:,} training events "
                             f"(median of {seeds} seed(s) [min–max])",
                    "columns": ["system", *FIGURES], "rows": rows})
        out.append({"title": f"ml-100k {kind}: targets (issue #10)", "columns": ["target", "ours", "bar", "ratio",
                                                                                  "met"],
                    "rows": targets(part["summary"])})
    return out


def notes(result: Mapping[str, Any]) -> list[str]:
    """How the figures were made, and the headline of each split: where we win and where we lose."""
    out = [
        "Our rows are the SavedModels `python -m trainer.task` exported (after its refit on all training events "
        "when export.refit is on), loaded into a TF1 session as TF Serving loads them and fed through their "
        "`serving_default` SignatureDefs. Each request carries the user's whole training history as "
        "watch_history (most recent last), so retrieval returns 100 items the user has not rated; two-stage "
        "is those 100 re-ordered by the `ranking` model's score.",
        "Peers: each tuned by NDCG@10 on a validation split cut from the training events the same way "
        "(setting in the per-seed JSON), then refitted on all training events. EASE and popularity do not "
        "depend on the seed.",
    ]
    for kind, part in result.items():
        missed = [f"{row['target']}: {row['ours']:.4f} vs {row['bar']:.4f}"
                  + (f" (ratio {row['ratio']:.3f})" if row["ratio"] is not None else "")
                  for row in targets(part["summary"]) if not row["met"]]
        met = [row["target"] for row in targets(part["summary"]) if row["met"]]
        out.append(f"{kind}: targets met: {'; '.join(met) or 'none'}. Missed: {'; '.join(missed) or 'none'}.")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    add_data_dir(parser)
    parser.add_argument("--config", type=pathlib.Path, default=CONFIG_FILE, help="the trainer.task config")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per split (default {SEEDS}; --quick: 1)")
    parser.add_argument("--splits", default=",".join(SPLITS), help=f"comma-separated, of {', '.join(SPLITS)}")
    args = parser.parse_args(argv)
    splits = [name.strip() for name in args.splits.split(",") if name.strip()]
    if not splits or set(splits) - set(SPLITS):
        parser.error(f"--splits: expected some of {', '.join(SPLITS)}, got {args.splits!r}")
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else SEEDS)
    if seeds < 1:
        parser.error(f"--seeds must be >= 1, got {seeds}")
    result = SectionResult("quality", args.quick)
    missing = missing_ml_100k(args.data_dir)
    if missing is not None:
        result.payload["skipped"] = missing
        result.write(args.out)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    with tempfile.TemporaryDirectory(prefix="bench_quality_") as folder:
        measured = measure(args.data_dir, args.config, seeds, args.quick, pathlib.Path(folder), splits)
    result.payload.update({
        "baseline": "EASE, implicit ALS and BPR, popularity and the TFRS tutorial models, tuned on the same "
                    "validation split and tested on the same held-out events in the same run",
        "config": str(args.config),
        "splits": measured,
        "tables": tables(measured, seeds),
        "notes": notes(measured),
    })
    result.write(args.out)


if __name__ == "__main__":
    main()
