"""Ranking on impressions (Covington et al. 2016, section 4.2): rows as shown, weighted by watch time."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsys_common import contract
from tests.ranking.conftest import small_config, strings
from trainer.data.bundle import TrainingData, prepare
from trainer.data.examples import CLICKED, ITEM_ID, WATCH_TIME, impression_examples
from trainer.data.schema import DataError
from trainer.data.synthetic import PlantedModel
from trainer.ranking.evaluate import top_k_full
from trainer.ranking.models import LABELS, WEIGHTS, RankingModel
from trainer.ranking.protocol import RankingData, temporal_protocol, training_impressions
from trainer.ranking.rows import ImpressionRecipe
from trainer.ranking.signature import RankingSignature
from trainer.ranking.train import FitOptions, row_recipe, train_model, training_unit

WORLD = {"synthetic.slate_size": 6, "synthetic.clickbait_fraction": 0.1, "synthetic.freshness_days": 2.0,
         "synthetic.num_channels": 10, "synthetic.num_languages": 3, "ranking.compare": ["itempop"],
         "ranking.epochs": 2}


@pytest.fixture(scope="module")
def world() -> TrainingData:
    return prepare(small_config(**WORLD))


def _impressions() -> dict[str, np.ndarray]:
    return {contract.USER_ID: strings(["u1", "u1", "u2"]), contract.REQUEST_TIME: np.array([5, 5, 9]),
            ITEM_ID: strings(["a", "b", "c"]), CLICKED: np.array([True, False, True]),
            WATCH_TIME: np.array([30.0, 0.0, np.nan], np.float32)}


@pytest.mark.parametrize(("weighted", "weights"), [(True, [3.0, 1.0, 1.0]), (False, [1.0, 1.0, 1.0])])
def test_an_impression_is_one_row_labelled_by_its_click(weighted: bool, weights: list[float]) -> None:
    recipe = ImpressionRecipe((contract.USER_ID, contract.CANDIDATE_IDS), watch_time_unit=10.0, weighted=weighted)
    rows = recipe.rows(_impressions(), epoch=3)
    assert rows[contract.CANDIDATE_IDS].tolist() == [["a"], ["b"], ["c"]]
    np.testing.assert_array_equal(rows[LABELS], [[1.0], [0.0], [1.0]])
    np.testing.assert_allclose(rows[WEIGHTS], np.array(weights)[:, None])  # a click of unknown watch time weighs 1
    assert rows[contract.USER_ID].tolist() == ["u1", "u1", "u2"]


def test_the_ranker_trains_on_the_training_periods_impressions(world: TrainingData) -> None:
    config = small_config(**WORLD)
    data = temporal_protocol(world, config)
    assert data.impressions is not None
    assert data.impressions[contract.REQUEST_TIME].max() < world.split.validation_start
    shown = world.dataset.impressions
    assert shown is not None
    assert len(data.impressions[ITEM_ID]) == int((shown["timestamp"] < world.split.validation_start).sum())
    recipe = row_recipe(data, ("user_id", contract.CANDIDATE_IDS), FitOptions.from_config(config.ranking, 1))
    assert isinstance(recipe, ImpressionRecipe)
    clicked = data.impressions[CLICKED]
    assert recipe.watch_time_unit == pytest.approx(float(np.mean(data.impressions[WATCH_TIME][clicked])))
    # the history of an impression holds only watches before it
    watch_times = world.split.train.set_index(["user_id", "item_id"])["timestamp"]
    for row in np.flatnonzero(data.impressions[contract.WATCH_HISTORY][:, -1] != "")[:50]:
        user, latest = data.impressions[contract.USER_ID][row], data.impressions[contract.WATCH_HISTORY][row, -1]
        assert watch_times.loc[(user, latest)].min() < data.impressions[contract.REQUEST_TIME][row]


def test_train_on_watches_or_impressions_is_chosen_by_config(world: TrainingData) -> None:
    assert training_impressions(world, small_config(**WORLD, **{"ranking.train_on": "watches"})) is None
    watches_only = dataclasses.replace(world, dataset=dataclasses.replace(world.dataset, impressions=None))
    assert training_impressions(watches_only, small_config(**WORLD)) is None
    with pytest.raises(DataError, match="ranking.train_on: impressions, but the synthetic logs hold no impressions"):
        training_impressions(watches_only, small_config(**WORLD, **{"ranking.train_on": "impressions"}))


@dataclasses.dataclass
class Ranker:
    model: RankingModel
    data: RankingData
    watch_time_unit: float


def _train(world: TrainingData, weighted: bool) -> Ranker:
    config = small_config(**WORLD, **{"ranking.watch_time_weights": weighted})
    data = temporal_protocol(world, config)
    model, _ = train_model("full", data, config)
    return Ranker(model, data, training_unit(data))


@pytest.fixture(scope="module")
def weighted_ranker(world: TrainingData) -> Ranker:
    return _train(world, weighted=True)


def _clickbait_share_of_top(world: TrainingData, ranker: Ranker, k: int = 10) -> float:
    truth = world.dataset.ground_truth
    assert isinstance(truth, PlantedModel) and ranker.data.full_ranking is not None
    ranked = top_k_full(ranker.model, ranker.data.full_ranking, k)
    return float(np.isin(ranked, truth.item_ids[truth.world.clickbait]).mean())


def test_watch_time_weights_demote_clickbait(world: TrainingData, weighted_ranker: Ranker) -> None:
    weighted = _clickbait_share_of_top(world, weighted_ranker)
    unweighted = _clickbait_share_of_top(world, _train(world, weighted=False))
    assert unweighted > 0.1, "clicks alone favour the clickbait (10% of items)"
    assert weighted < 0.5 * unweighted


def test_expected_watch_time_has_the_level_of_the_held_out_watch_time(world: TrainingData,
                                                                       weighted_ranker: Ranker) -> None:
    """exp(logit) x unit is the weighted odds: sum of watch time / number of passed-over impressions, i.e.
    E[watch time per impression] / (1 - P(click)) (the paper's approximation). Over the test period's
    impressions, times (1 - CTR), it is the watch time per impression the world gave."""
    shown = world.dataset.impressions
    assert shown is not None
    test = shown[shown["timestamp"].to_numpy() >= world.split.test_start]
    examples = impression_examples(test, world.split.train, world.dataset.users, world.history_length,
                                   world.search_history_length)
    signature = RankingSignature(weighted_ranker.model, weighted_ranker.watch_time_unit, sampling_rate=1.0)
    request = {spec.name: examples[spec.name] for spec in contract.RANKING_INPUTS if spec.name in examples}
    _, expected_watch_time = signature({**request, contract.CANDIDATE_IDS: examples[ITEM_ID].astype(object)[:, None]})
    clicked = examples[CLICKED].astype(bool)
    watched = np.where(clicked, np.nan_to_num(examples[WATCH_TIME]), 0.0)
    assert 0.05 < clicked.mean() < 0.5 and len(watched) > 1000
    assert expected_watch_time.mean() * (1 - clicked.mean()) == pytest.approx(watched.mean(), rel=0.15)
