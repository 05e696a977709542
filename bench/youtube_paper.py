"""The YouTube DNN paper's experiments (Covington et al. 2016), reproduced on the synthetic YouTube world.

`python -m bench.youtube_paper --out FILE.json [--quick] [--seeds N]`

The world (`trainer.data.synthetic` with impressions, clickbait, freshness, channels and languages; the
config is WORLD below) is drawn anew for each seed, and every figure is the median over the seeds, next to
the planted model's own ordering (the ceiling). Four experiments:

1. Example age (the paper's figure 4): the candidate generator trained with and without the example-age
   feature. At the end of the training window (where the paper measures too: later uploads are not in the
   vocabulary), the share of the top-K recommendations, and of the model's softmax probability, that goes
   to items uploaded in the last FRESH_DAYS days, for the users active in the next period (their training
   watches left out); the planted model's share (its logits with the items' freshness at that time, over
   the released items) is the truth.
2. Weighted against unweighted logistic regression on impressions (table 1's loss): the full ranker
   trained on impressions, clicks weighted by watch time or not. On the held-out slates (each test-period
   watch and the items shown beside it and passed over), the weighted per-user loss (`trainer.metrics`);
   on each test user's top-K of the whole catalogue, the share of clickbait and the planted watch time per
   recommendation (planted choice probability x planted watch time, summed over the top K). And the level
   of the exported `expected_watch_time` (seconds per impression, Covington et al.'s approximation
   E[T] / (1 - P(click))): on every held-out impression, mean expected_watch_time x (1 - click rate)
   against the mean watch time the users spent (0 where they did not click), as a ratio (1 = the right level).
3. Ranking depth and width against the weighted per-user loss (table 1), RANKING_SHAPES.
4. Candidate-generation features and depth against hold-out recall (figure 6): watches only or every
   feature, towers RETRIEVAL_SHAPES deep; test-period Recall@K of the temporal protocol.
"""

from __future__ import annotations

import dataclasses
import pathlib
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from bench.cli import SectionResult, section_parser

K = 10
RECALL_K = 50
FRESH_DAYS = 7
RANKING_SHAPES: tuple[tuple[int, ...], ...] = ((16,), (64, 32, 16), (128, 64, 32, 16))
RETRIEVAL_SHAPES: tuple[tuple[int, ...], ...] = ((32,), (64, 32))
WATCHES_ONLY = ["user_id", "watch_history"]
WORLD = {"synthetic.num_users": 1500, "synthetic.num_items": 600, "synthetic.events_per_user": 30,
         "synthetic.num_topics": 12, "synthetic.days": 90, "synthetic.slate_size": 6,
         "synthetic.clickbait_fraction": 0.08, "synthetic.freshness_days": 3.0, "synthetic.num_channels": 40,
         "synthetic.num_languages": 4, "synthetic.new_item_fraction": 0.4}
QUICK_WORLD = {**WORLD, "synthetic.num_users": 400, "synthetic.num_items": 250, "synthetic.events_per_user": 20}
TRAINING = {"retrieval.epochs": 3, "retrieval.eval_ks": [K, RECALL_K], "retrieval.early_stopping_k": RECALL_K,
            "retrieval.eval_max_users": 1000, "ranking.epochs": 3, "ranking.batch_size": 512,
            "ranking.compare": ["itempop"], "ranking.eval_ks": [K], "ranking.eval_max_examples": 1000}
QUICK_TRAINING = {**TRAINING, "retrieval.epochs": 1, "ranking.epochs": 1}


@dataclasses.dataclass(frozen=True)
class Slates:
    """Held-out slates: the watch of each and the items shown beside it.

    Attributes:
        inputs: user inputs [P] of the watch's context, candidate_ids [P, S] (the watch first).
        watch_time: [P] seconds of the watch.
    """

    inputs: dict[str, np.ndarray]
    watch_time: np.ndarray


def world_config(seed: int, quick: bool, **overrides: Any) -> Any:
    from trainer.config import load_config

    return load_config(None, {**(QUICK_WORLD if quick else WORLD), **(QUICK_TRAINING if quick else TRAINING),
                              "synthetic.seed": seed, "seed": seed, **overrides})


def held_out_slates(data: Any) -> Slates:
    """The test period's watches, each with the full slate it was shown in (shorter slates are left out)."""
    from recsys_common import contract

    impressions = data.dataset.impressions
    examples = data.test_examples
    watches = pd.DataFrame({"user_id": examples[contract.USER_ID], "timestamp": examples[contract.REQUEST_TIME],
                            "item_id": examples["item_id"]})
    passed = impressions[~impressions["clicked"]].groupby(["user_id", "timestamp"])["item_id"].agg(list)
    shown = passed.reindex(pd.MultiIndex.from_frame(watches[["user_id", "timestamp"]])).to_numpy()
    width = max((len(items) for items in shown if isinstance(items, list)), default=0)
    full = np.array([isinstance(items, list) and len(items) == width for items in shown])
    rows = np.flatnonzero(full)
    candidates = np.array([[watches["item_id"].iloc[row], *shown[row]] for row in rows], dtype=object)
    inputs = {name: examples[name][rows] for name in _user_input_names()}
    inputs[contract.CANDIDATE_IDS] = candidates
    return Slates(inputs, examples["watch_time"][rows].astype(np.float64))


def slate_loss(model: Any, slates: Slates) -> float:
    """The weighted per-user loss of `model` on the held-out slates (0 is perfect, 0.5 is chance)."""
    from trainer import metrics
    from trainer.ranking.evaluate import score_inputs

    logits = score_inputs(model, slates.inputs)
    return metrics.weighted_per_user_loss(logits[:, 0], logits[:, 1:], slates.watch_time)


def planted_value(truth: Any, users: np.ndarray, request_time: int, pool: np.ndarray) -> np.ndarray:
    """[U, M] planted watch time of recommending each pool item: choice probability x expected watch time."""
    columns = pd.Index(truth.item_ids).get_indexer(pool)
    logits = truth.scores(users, np.full(len(users), request_time))[:, columns]
    released = truth.world.release_time[columns] <= request_time
    probability = _softmax(np.where(released[None, :], logits, -np.inf))
    return probability * truth.expected_watch_time(users)[:, columns]


def top_k_figures(ranked: np.ndarray, truth: Any, value: np.ndarray, pool: np.ndarray) -> dict[str, float]:
    """Clickbait share and planted watch time of top-K lists [U, K] of pool items."""
    index = pd.Index(pool).get_indexer(ranked.ravel()).reshape(ranked.shape)
    clickbait = np.isin(pool, truth.item_ids[truth.world.clickbait])
    return {"clickbait_share": float(clickbait[index].mean()),
            "watch_time_per_user": float(np.take_along_axis(value, index, axis=1).sum(axis=1).mean())}


def ranking_experiments(seed: int, quick: bool) -> list[dict[str, Any]]:
    """Experiments 2 and 3 on one seed's world: one row per ranker, and the planted ceiling."""
    from trainer.data.bundle import prepare
    from trainer.ranking.evaluate import top_k_full
    from trainer.ranking.protocol import temporal_protocol
    from trainer.ranking.train import train_model

    config = world_config(seed, quick)
    data = prepare(config)
    temporal = temporal_protocol(data, config)
    slates = held_out_slates(data)
    held_out = held_out_impressions(data)
    full = temporal.full_ranking
    assert full is not None
    truth = data.dataset.ground_truth
    pool = np.asarray(full.pool, dtype=object)
    users = np.asarray(full.contexts["user_id"], dtype=object)
    value = planted_value(truth, users, int(data.split.test_start), pool)
    for row, excluded in enumerate(full.exclude):
        value[row, pd.Index(pool).get_indexer(list(excluded))] = -np.inf
    planted_top = pool[np.argsort(-value, axis=1)[:, :K]]
    value = np.where(np.isfinite(value), value, 0.0)
    rows = [{"seed": seed, "model": "planted model (ceiling)", **top_k_figures(planted_top, truth, value, pool)}]
    variants: list[tuple[str, bool, tuple[int, ...]]] = [("weighted LR", True, RANKING_SHAPES[1]),
                                                         ("unweighted LR", False, RANKING_SHAPES[1])]
    variants += [(f"weighted LR, MLP {list(shape)}", True, shape) for shape in (RANKING_SHAPES[0], RANKING_SHAPES[2])]
    for name, weighted, shape in variants:
        variant = world_config(seed, quick, **{"ranking.watch_time_weights": weighted,
                                               "ranking.mlp_layers": list(shape)})
        model, _ = train_model("full", temporal, variant)
        rows.append({"seed": seed, "model": name, "mlp_layers": list(shape), "weighted": weighted,
                     "weighted_per_user_loss": slate_loss(model, slates),
                     "watch_time_level": watch_time_level(model, temporal, held_out),
                     **top_k_figures(top_k_full(model, full, K), truth, value, pool)})
    return rows


def held_out_impressions(data: Any) -> dict[str, np.ndarray]:
    """The test period's impressions with their contexts (every earlier watch), as a client would send them."""
    from trainer.data.examples import impression_examples

    shown = data.dataset.impressions
    shown = shown[shown["timestamp"].to_numpy() >= data.split.test_start]
    return impression_examples(shown, data.dataset.events, data.dataset.users, data.history_length,
                               data.search_history_length)


def watch_time_level(model: Any, temporal: Any, held_out: Mapping[str, np.ndarray], batch: int = 8192) -> float:
    """Mean exported expected_watch_time x (1 - click rate) over the held-out impressions, over their mean
    watch time: 1 when expected_watch_time is in seconds per impression (to the paper's approximation)."""
    from recsys_common import contract
    from trainer.ranking.signature import RankingSignature
    from trainer.ranking.train import training_unit

    signature = RankingSignature(model, training_unit(temporal), sampling_rate=1.0)  # impressions: none sampled
    names = [spec.name for spec in signature.inputs if spec.name != contract.CANDIDATE_IDS]
    expected = []
    for start in range(0, len(held_out["item_id"]), batch):
        request = {name: held_out[name][start:start + batch] for name in names}
        request[contract.CANDIDATE_IDS] = held_out["item_id"][start:start + batch].astype(object)[:, None]
        expected.append(signature(request)[1][:, 0])
    clicked = held_out["clicked"].astype(np.float64)
    watched = np.nan_to_num(held_out["watch_time"].astype(np.float64))
    return float(np.concatenate(expected).mean() * (1.0 - clicked.mean()) / watched.mean())


def retrieval_experiments(seed: int, quick: bool, work: pathlib.Path) -> list[dict[str, Any]]:
    """Experiments 1 and 4 on one seed's world: one row per candidate generator, and the planted truth."""
    from trainer.data.bundle import prepare
    from trainer.retrieval.train import train_retrieval
    from trainer.run import RunContext

    config = world_config(seed, quick)
    data = prepare(config)
    truth = data.dataset.ground_truth
    request_time = int(data.t_max)
    rows = [{"seed": seed, "model": "planted model (truth)", **planted_freshness(truth, data, request_time)}]
    variants: list[tuple[str, list[str] | None, tuple[int, ...]]] = [
        ("all features, no example age", [f for f in config.retrieval.features if f != "example_age"],
         RETRIEVAL_SHAPES[1])]
    variants += [(f"{'all features' if features is None else 'watches only'}, towers {list(shape)}",
                  features, shape) for features in (None, WATCHES_ONLY) for shape in RETRIEVAL_SHAPES]
    for name, features, shape in variants:
        overrides: dict[str, Any] = {"retrieval.tower_layers": list(shape)}
        if features is not None:
            overrides["retrieval.features"] = features
        variant = world_config(seed, quick, **overrides)
        result = train_retrieval(variant, data, RunContext(work / f"retrieval-{seed}-{len(rows)}"))
        rows.append({"seed": seed, "model": name, "example_age": "example_age" in result.features.enabled(),
                     "tower_layers": list(shape), f"recall@{RECALL_K}": result.metrics.get(f"recall@{RECALL_K}"),
                     **model_freshness(result, data, request_time)})
    return rows


def planted_freshness(truth: Any, data: Any, request_time: int) -> dict[str, float]:
    """The planted model's share of top-K and of probability on items uploaded in the last FRESH_DAYS days."""
    users = _next_users(data)
    pool = np.asarray(data.catalog.item_ids, dtype=object)
    columns = pd.Index(truth.item_ids).get_indexer(pool)
    logits = truth.scores(users, np.full(len(users), request_time))[:, columns]
    released = truth.world.release_time[columns] <= request_time
    return _fresh_shares(np.where(released[None, :], logits, -np.inf), users, data, request_time)


def model_freshness(result: Any, data: Any, request_time: int) -> dict[str, float]:
    """The candidate generator's share of top-K and of softmax probability on fresh items, at `request_time`."""
    from trainer.data.examples import query_examples
    from trainer.retrieval import retrieve

    users = _next_users(data)
    contexts = query_examples(data.split.train, data.dataset.users, users, request_time, data.history_length,
                              data.search_history_length)
    retrievable = {name: contexts[name] for name in _retrieval_input_names()}
    item_ids, scores = retrieve(result, retrievable, len(result.item_ids))
    pool = np.asarray(data.catalog.item_ids, dtype=object)
    index = pd.Index(pool).get_indexer(item_ids.ravel()).reshape(item_ids.shape)
    by_pool = np.full((len(users), len(pool)), -np.inf)
    rows, slots = np.nonzero(index >= 0)  # "" pads a row of fewer unseen items
    by_pool[rows, index[rows, slots]] = scores[rows, slots]
    return _fresh_shares(by_pool, users, data, request_time)


def _fresh_shares(logits: np.ndarray, users: np.ndarray, data: Any, request_time: int) -> dict[str, float]:
    """Shares of top-K and of softmax probability on fresh items, each user's watched items left out."""
    release = data.catalog.release_time
    fresh = (release <= request_time) & (release > request_time - FRESH_DAYS * 86_400)
    before = data.split.train
    user_rows = pd.Index(users).get_indexer(before["user_id"])
    item_columns = pd.Index(data.catalog.item_ids).get_indexer(before["item_id"])
    known = (user_rows >= 0) & (item_columns >= 0)
    logits = logits.copy()
    logits[user_rows[known], item_columns[known]] = -np.inf
    top = np.argsort(-logits, axis=1)[:, :K]
    return {"fresh_top_k_share": float(fresh[top].mean()),
            "fresh_probability_share": float((_softmax(logits) * fresh[None, :]).sum(axis=1).mean()),
            "fresh_catalogue_share": float(fresh.mean())}


def _next_users(data: Any) -> np.ndarray:
    """The users active in the validation period, the one right after the training window."""
    return np.array(sorted(set(data.split.validation["user_id"])), dtype=object)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    weights = np.exp(shifted)
    return weights / weights.sum(axis=1, keepdims=True)


def _user_input_names() -> tuple[str, ...]:
    from recsys_common import contract

    return tuple(spec.name for spec in contract.USER_INPUTS + contract.RANKING_CONTEXT_INPUTS)


def _retrieval_input_names() -> tuple[str, ...]:
    from recsys_common import contract

    return tuple(spec.name for spec in contract.RETRIEVAL_INPUTS)


def medians(rows: Sequence[Mapping[str, Any]], figures: Sequence[str]) -> list[dict[str, Any]]:
    """One row per model (in first-seen order): the median of each figure over the seeds that have it."""
    out = []
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = [row for row in rows if row["model"] == model]
        summary: dict[str, Any] = {"model": model, "seeds": len(mine)}
        for figure in figures:
            values = [row[figure] for row in mine if row.get(figure) is not None]
            if values:
                summary[figure] = round(float(statistics.median(values)), 4)
        out.append(summary)
    return out


RANKING_FIGURES = ("weighted_per_user_loss", "clickbait_share", "watch_time_per_user", "watch_time_level")
RETRIEVAL_FIGURES = ("fresh_top_k_share", "fresh_probability_share", "fresh_catalogue_share", f"recall@{RECALL_K}")


def tables(ranking: Sequence[Mapping[str, Any]], retrieval: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [
        {"title": f"Ranking on impressions: weighted per-user loss on held-out slates, clickbait share and planted "
                  f"watch time of the top {K}, and the level of expected_watch_time on the held-out impressions "
                  "(1 = seconds per impression; medians over seeds)",
         "columns": ["model", "seeds", *RANKING_FIGURES], "rows": medians(ranking, RANKING_FIGURES)},
        {"title": f"Candidate generation: share of the top {K} and of the probability on items uploaded in the last "
                  f"{FRESH_DAYS} days, and test Recall@{RECALL_K} (medians over seeds)",
         "columns": ["model", "seeds", *RETRIEVAL_FIGURES], "rows": medians(retrieval, RETRIEVAL_FIGURES)},
    ]


def main(argv: list[str] | None = None) -> None:
    parser = section_parser(__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=None, help="worlds to draw (default 3, --quick 1)")
    args = parser.parse_args(argv)
    seeds = args.seeds or (1 if args.quick else 3)
    result = SectionResult("youtube_paper", args.quick)
    ranking: list[dict[str, Any]] = []
    retrieval: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        for seed in range(1, seeds + 1):
            ranking += ranking_experiments(seed, args.quick)
            retrieval += retrieval_experiments(seed, args.quick, pathlib.Path(scratch))
    result.payload.update({
        "baseline": "the planted model's own ordering (ceiling) on the same world; unweighted LR against weighted",
        "world": QUICK_WORLD if args.quick else WORLD,
        "tables": tables(ranking, retrieval),
        "per_seed": {"ranking": ranking, "retrieval": retrieval},
    })
    result.write(args.out)


if __name__ == "__main__":
    main()
