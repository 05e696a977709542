"""`export.refit`: after model selection on the temporal split, both stages are retrained on the whole log and
those models are exported.

The data is built so that the refit matters: a MovieLens-format log (ml-latest-small files) in which users of
two taste groups watch items of their group during the training and validation periods, and at the very end
most users watch one new item that no event mentions before the test period (the "hit"). One more catalogue
item has no event at all. Refitted, the exported retrieval model knows the hit and recommends it; without the
refit (`export.refit: false`) the exported models are today's: trained on the training period only, the hit
outside their vocabularies.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from recsys_common import contract
from trainer.config import Config, load_config
from trainer.export import layout
from trainer.retrieval.export import default_request
from trainer.task import TaskResult, run_task

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
USERS, GROUP_ITEMS, WATCHES = 60, 12, 8
HIT, UNWATCHED = "100", "200"
HIT_WATCHERS = 50
DAY = 86_400
START = 1_600_000_000


def write_log(folder: pathlib.Path) -> dict[str, list[str]]:
    """Writes ratings.csv and movies.csv of the log described in the module docstring.

    Returns:
        user id -> the items they watched before the test period, oldest first.
    """
    rng = np.random.default_rng(3)
    rows, before = [], {}
    for user in range(1, USERS + 1):
        group = 1 + (user % 2) * GROUP_ITEMS  # odd users like items 13..24, even users 1..12
        items = rng.choice(np.arange(group, group + GROUP_ITEMS), WATCHES, replace=False)
        days = np.sort(rng.uniform(0, 80, WATCHES))
        rows += [(user, int(item), 4.0, START + int(day * DAY)) for item, day in zip(items, days)]
        before[str(user)] = [str(item) for item in items]
    for user in range(1, HIT_WATCHERS + 1):  # the test period: most users watch the hit
        rows.append((user, int(HIT), 5.0, START + int(rng.uniform(95, 100) * DAY)))
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["userId,movieId,rating,timestamp"] + [f"{u},{i},{r},{t}" for u, i, r, t in rows]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    movies = ["movieId,title,genres"]
    movies += [f"{item},Film {item} (1990),{'Drama' if item <= GROUP_ITEMS else 'Comedy'}"
               for item in range(1, 2 * GROUP_ITEMS + 1)]
    movies += [f"{HIT},The Hit (2020),Drama|Comedy", f"{UNWATCHED},Never Watched (2021),Documentary"]
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    return before


def hit_config(folder: pathlib.Path, refit: bool) -> Config:
    config = load_config(TINY, {
        "data.source": "ml-latest-small", "data.data_dir": str(folder / "data"), "data.download": False,
        "data.eval_negatives": 10,
        "retrieval.learning_rate": 0.05, "retrieval.batch_size": 32, "retrieval.epochs": 3,
        "retrieval.early_stopping_k": 5, "retrieval.eval_ks": [5, 10], "ranking.compare": [],
        "ranking.rerank_candidates": 10, "ranking.batch_size": 64, "export.max_k": 20, "export.refit": refit,
        "run_dir": str(folder / "runs"), "export.output_dir": str(folder / f"saved_models_refit_{refit}"),
    })
    return config


@pytest.fixture(scope="module")
def hit_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, dict[str, list[str]]]:
    folder = tmp_path_factory.mktemp("refit")
    return folder, write_log(folder / "data")


@pytest.fixture(scope="module")
def refitted(hit_log: tuple[pathlib.Path, dict[str, list[str]]]) -> TaskResult:
    return run_task(hit_config(hit_log[0], refit=True), run_name="refit")


@pytest.fixture(scope="module")
def not_refitted(hit_log: tuple[pathlib.Path, dict[str, list[str]]]) -> TaskResult:
    return run_task(hit_config(hit_log[0], refit=False), run_name="no-refit")


def retrieve(version: pathlib.Path, user_ids: list[str], histories: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(item ids [B, K] str, scores [B, K]) of an exported retrieval SavedModel, loaded as TF Serving loads it."""
    from serving.session_model import SessionModel

    width = max(len(history) for history in histories)
    request = default_request(len(user_ids))
    request[contract.USER_ID] = np.array(user_ids, dtype=object)
    request[contract.WATCH_HISTORY] = np.array([[""] * (width - len(h)) + h for h in histories], dtype=object)
    with SessionModel.load(version) as model:
        outputs = model.run(contract.SIGNATURE_NAME, request)
    ids = np.vectorize(lambda value: value.decode(), otypes=[object])(outputs[contract.ITEM_IDS])
    return ids, outputs[contract.SCORES]


def first_unseen(version: pathlib.Path, before: dict[str, list[str]]) -> list[str]:
    """Each user's best item that they have not watched, asked with their history before the test period."""
    users = sorted(before, key=int)
    ids, _ = retrieve(version, users, [before[user] for user in users])
    return [next(item for item in row if item not in before[user]) for user, row in zip(users, ids.tolist())]


def test_the_refitted_export_recommends_the_item_seen_only_in_the_test_period(
        refitted: TaskResult, not_refitted: TaskResult, hit_log: tuple[pathlib.Path, dict[str, list[str]]]) -> None:
    _, before = hit_log
    for name in (contract.RETRIEVAL, contract.RETRIEVAL_BRUTEFORCE):
        share = np.mean([item == HIT for item in first_unseen(refitted.exports[name], before)])
        assert share >= 0.8, f"{name}: the hit comes first for only {share:.0%} of the users"
        share = np.mean([item == HIT for item in first_unseen(not_refitted.exports[name], before)])
        assert share <= 0.2, f"{name} trained on the training period alone puts the hit first for {share:.0%}"


def test_the_refitted_vocabulary_holds_the_test_period_item(refitted: TaskResult,
                                                             not_refitted: TaskResult) -> None:
    """An item outside the vocabulary embeds to zero and drops out of the history mean: a history of just the
    hit then asks the same as an empty one. Refitted, the hit is known and moves the query."""
    moved = {}
    for label, result in (("refit", refitted), ("no refit", not_refitted)):
        empty_ids, empty_scores = retrieve(result.exports[contract.RETRIEVAL_BRUTEFORCE], ["nobody"], [[""]])
        hit_ids, hit_scores = retrieve(result.exports[contract.RETRIEVAL_BRUTEFORCE], ["nobody"], [[HIT]])
        empty = dict(zip(empty_ids[0], empty_scores[0]))
        common = [(empty[item], score) for item, score in zip(hit_ids[0], hit_scores[0]) if item in empty]
        assert common, label
        moved[label] = max(abs(a - b) for a, b in common)
    assert moved["no refit"] == pytest.approx(0.0, abs=1e-6)
    assert moved["refit"] > 1e-3
    ranking = layout.read_metadata(refitted.exports[contract.RANKING])["data"]
    assert ranking["num_items"] == 2 * GROUP_ITEMS + 1  # every item with an event, the hit included
    assert layout.read_metadata(not_refitted.exports[contract.RANKING])["data"]["num_items"] == 2 * GROUP_ITEMS


def test_every_catalogue_item_is_in_the_index(refitted: TaskResult) -> None:
    metadata = layout.read_metadata(refitted.exports[contract.RETRIEVAL])
    assert metadata["index"]["num_items"] == 2 * GROUP_ITEMS + 2
    assert {HIT, UNWATCHED} <= set(metadata[contract.METADATA_ITEM_TITLES])


def expected_trained_on(folder: pathlib.Path, periods: list[str]) -> dict[str, object]:
    """What the models saw, counted from ratings.csv: the events of `periods` (the temporal split of tiny.yaml)."""
    rows = np.loadtxt(folder / "data" / "ratings.csv", delimiter=",", skiprows=1, dtype=np.int64, usecols=(0, 1, 3))
    times = np.sort(rows[:, 2])
    if periods == ["train"]:  # 10% validation, 10% test by time: training ends before the validation start
        validation_start = times[int(np.ceil(len(times) * (1.0 - 0.1 - 0.1)))]
        rows = rows[rows[:, 2] < validation_start]
    return {"events": len(rows), "first_event_time": int(rows[:, 2].min()), "last_event_time": int(rows[:, 2].max()),
            "users": len(set(rows[:, 0])), "items": len(set(rows[:, 1]))}


@pytest.mark.parametrize("refit", [True, False])
def test_metadata_and_metrics_say_what_data_the_models_saw(refit: bool, refitted: TaskResult,
                                                           not_refitted: TaskResult,
                                                           hit_log: tuple[pathlib.Path, dict[str, list[str]]]) -> None:
    result = refitted if refit else not_refitted
    periods = ["train", "validation", "test"] if refit else ["train"]
    expected = expected_trained_on(hit_log[0], periods)
    recorded = json.loads((result.run.root / "metrics.json").read_text())["refit"]
    assert recorded["refit"] is refit and recorded["periods"] == periods
    assert {key: recorded[key] for key in expected} == expected
    assert recorded["catalog_items"] == 2 * GROUP_ITEMS + 2
    for name in (contract.RETRIEVAL, contract.RETRIEVAL_BRUTEFORCE, contract.RANKING):
        trained_on = layout.read_metadata(result.exports[name])["trained_on"]
        assert {key: trained_on[key] for key in ("refit", "periods", *expected)} == {
            "refit": refit, "periods": periods, **expected}, name


def test_the_reported_metrics_are_the_held_out_ones(refitted: TaskResult, not_refitted: TaskResult) -> None:
    """Refit or not, the metrics are those of the temporal split's test period, and so are the export's."""
    for result in (refitted, not_refitted):
        assert result.metrics["retrieval"]["test_users"] > 0
        assert "recall@10" in result.metrics["retrieval"] and "test_hr@10" in result.metrics["ranking"]
        assert layout.read_metadata(result.exports[contract.RETRIEVAL])["metrics"]["recall@10"] == \
            result.metrics["retrieval"]["recall@10"]
        assert layout.read_metadata(result.exports[contract.RANKING])["metrics"]["test_hr@10"] == \
            result.metrics["ranking"]["test_hr@10"]
    selected = refitted.metrics["refit"]
    assert selected["retrieval_epochs"] == refitted.metrics["retrieval"]["best_epoch"]
    assert set(selected["ranking_epochs"]) == {"full"}
    assert "refit" in refitted.metrics["wall_time_s"] and "refit" not in not_refitted.metrics["wall_time_s"]



def test_the_whole_log_in_memory_and_from_shards_holds_the_test_period(
        hit_log: tuple[pathlib.Path, dict[str, list[str]]], tmp_path: pathlib.Path) -> None:
    """The refit's data, in memory and from `python -m trainer.preprocess` shards: every event trains; the
    vocabularies, t_max and the logQ item counts are the whole log's; nothing is held out."""
    from trainer.data import bundle
    from trainer.data.event_stream import FrameEventSource
    from trainer.data.prepared import load_prepared
    from trainer.preprocess import preprocess
    from trainer.refit import whole_log

    config = hit_config(hit_log[0], refit=True)
    data = bundle.prepare(config)
    manifest = preprocess(FrameEventSource(data.dataset.events, "hits", 100), data.dataset.users, data.dataset.items,
                          config.data, tmp_path / "prepared", shard_size=100)
    prepared = load_prepared(dataclasses.replace(config, data=dataclasses.replace(
        config.data, prepared_dir=str(manifest.directory), prepared_sample_examples=200)))
    expected = expected_trained_on(hit_log[0], ["train", "validation", "test"])
    assert HIT not in data.vocab.item_ids and HIT not in prepared.vocab.item_ids
    for label, whole in (("memory", whole_log(config, data)), ("shards", whole_log(config, prepared))):
        assert HIT in whole.vocab.item_ids and UNWATCHED not in whole.vocab.item_ids, label
        assert len(whole.vocab.item_ids) == expected["items"] and len(whole.vocab.user_ids) == expected["users"]
        assert whole.t_max == expected["last_event_time"], label
        assert whole.t_span == expected["last_event_time"] - expected["first_event_time"], label
        assert len(whole.validation_examples["item_id"]) == len(whole.test_examples["item_id"]) == 0, label
        assert whole.split.validation.empty and whole.split.test.empty, label
        assert {key: whole.trained_on[key] for key in expected} == expected, label
        assert list(whole.catalog.item_ids) == list(data.catalog.item_ids), label
    memory = whole_log(config, data)
    assert len(memory.train_examples["item_id"]) == expected["events"]
    assert np.sum(memory.train_examples["item_id"] == HIT) == HIT_WATCHERS
    shards = whole_log(config, prepared).shards
    assert shards is not None and shards.examples("train") == expected["events"]
    assert shards.examples("validation") == shards.examples("test") == 0
    assert shards.train_item_counts[HIT] == HIT_WATCHERS
    assert sum(shards.train_item_counts.values()) == expected["events"]
