"""Evaluation and two-stage re-ranking with a popularity model whose scores are known exactly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from recsys_common import contract
from trainer.ranking.evaluate import evaluate_full, evaluate_sampled, score_inputs, top_k_full
from trainer.ranking.models import ItemPop
from trainer.ranking.protocol import FullRankingSet, SampledSet
from trainer.ranking.two_stage import candidates_after_exclusion, evaluate_two_stage


def strings(rows) -> np.ndarray:
    return np.array(rows, dtype=object)


@pytest.fixture()
def popularity(hand_space) -> ItemPop:
    """Training positives: a three times, b twice, c once (logits log 4, log 3, log 2, 0 for d)."""
    model = ItemPop(hand_space)
    candidates = strings([["a"], ["a"], ["a"], ["b"], ["b"], ["c"]])
    model.fit_statistics({contract.CANDIDATE_IDS: candidates}, np.ones((6, 1)))
    return model


def contexts(users: list[str]) -> dict[str, np.ndarray]:
    return {contract.USER_ID: strings(users), contract.WATCH_HISTORY: strings([[""]] * len(users))}


def full_set(exclude: list[set[str]], relevant: list[set[str]]) -> FullRankingSet:
    return FullRankingSet(contexts=contexts(["u1", "u2"]), relevant=[frozenset(r) for r in relevant],
                          exclude=[frozenset(e) for e in exclude], pool=strings(["d", "c", "b", "a"]))


def test_scores_do_not_depend_on_the_batch_size(popularity):
    inputs = {**contexts(["u1"] * 5), contract.CANDIDATE_IDS: strings([["a", "b", "c", "d"]] * 5)}
    np.testing.assert_array_equal(score_inputs(popularity, inputs, pairs_per_batch=4),
                                  score_inputs(popularity, inputs))
    np.testing.assert_allclose(score_inputs(popularity, inputs)[0], np.log([4, 3, 2, 1]), rtol=1e-6)


def test_sampled_metrics_of_known_ranks(popularity):
    # held-out a ranks first, c third (a and b beat it), d last of 4
    held_out = SampledSet(inputs={**contexts(["u1", "u2", "u1"]),
                                  contract.CANDIDATE_IDS: strings([["a", "b", "c"], ["c", "a", "b"], ["d", "a", "c"]])},
                          watch_time=np.array([1.0, 2.0, 1.0], dtype=np.float32))
    metrics = evaluate_sampled(popularity, held_out, k=2)
    assert metrics["hr@2"] == pytest.approx(1 / 3)
    assert metrics["ndcg@2"] == pytest.approx(1 / 3)
    assert metrics["auc"] == pytest.approx((1.0 + 0.0 + 0.0) / 3)
    # mispredicted watch time: 0 of 1, 2 of 2, 1 of 1 -> 3 / 4
    assert metrics["weighted_per_user_loss"] == pytest.approx(3 / 4)


def test_full_ranking_leaves_out_watched_items(popularity):
    full = full_set(exclude=[{"a"}, set()], relevant=[{"b"}, {"c"}])
    np.testing.assert_array_equal(top_k_full(popularity, full, 3), [["b", "c", "d"], ["a", "b", "c"]])
    metrics = evaluate_full(popularity, full, [1, 3])
    assert metrics["recall@1"] == pytest.approx(0.5)
    assert metrics["recall@3"] == pytest.approx(1.0)
    assert metrics["ndcg_full@3"] == pytest.approx((1.0 + 1 / np.log2(4)) / 2)


class ReversedRetriever:
    """The pool by reverse popularity (d, c, b, a) without the seen items, as the exported model serves it;
    records the k and the seen items it was asked for."""

    def __init__(self) -> None:
        self.asked: list[tuple[int, list[list[str]]]] = []

    def __call__(self, features: dict[str, np.ndarray], k: int, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.asked.append((k, seen.tolist()))
        ids = np.full((len(features[contract.USER_ID]), k), "", dtype=object)
        for row, watched in enumerate(seen):
            unseen = [item for item in ["d", "c", "b", "a"] if item not in set(watched)][:k]
            ids[row, :len(unseen)] = unseen
        return ids, np.tile(-np.arange(k, dtype=np.float32), (len(ids), 1))


def test_two_stage_reranks_the_retrieved_candidates(popularity):
    full = full_set(exclude=[{"c"}, set()], relevant=[{"b"}, {"c"}])
    retriever = ReversedRetriever()
    np.testing.assert_array_equal(candidates_after_exclusion(retriever, full, 2), [["d", "b"], ["d", "c"]])
    assert retriever.asked == [(2, [["c"], [""]])]  # the model drops the watched items itself
    metrics = evaluate_two_stage(retriever, popularity, full, num_candidates=2, ks=[1, 2, 5])
    assert metrics["two_stage_candidate_recall"] == pytest.approx(1.0)
    assert metrics["retrieval_only_recall@1"] == pytest.approx(0.0)
    assert metrics["two_stage_recall@1"] == pytest.approx(1.0)
    assert metrics["two_stage_recall@2"] == metrics["retrieval_only_recall@2"] == pytest.approx(1.0)
    assert "two_stage_recall@5" not in metrics  # k beyond the candidate list is not measured
    assert not any("watch_time" in name for name in metrics)  # no watch times known


def test_two_stage_scores_both_lists_by_watch_time_recall(popularity):
    full = dataclasses.replace(full_set(exclude=[{"c"}, set()], relevant=[{"b", "a"}, {"c"}]),
                               relevant_watch_time=[{"b": 3.0, "a": 1.0}, {"c": 2.0}])
    metrics = evaluate_two_stage(ReversedRetriever(), popularity, full, num_candidates=2, ks=[1, 2])
    # retrieval alone: [d, b] and [d, c]; re-ranked by popularity: [b, d] and [c, d]
    assert metrics["retrieval_only_watch_time_recall@1"] == pytest.approx((0 + 0) / 2)
    assert metrics["two_stage_watch_time_recall@1"] == pytest.approx((3 / 4 + 2 / 2) / 2)
    assert metrics["retrieval_only_watch_time_recall@2"] == metrics["two_stage_watch_time_recall@2"] == \
        pytest.approx((3 / 4 + 2 / 2) / 2)


def test_the_temporal_protocol_sums_each_users_test_period_watch_time(temporal, data):
    full = temporal.full_ranking
    test = data.split.test
    for user, relevant, watch_time in zip(full.contexts[contract.USER_ID], full.relevant, full.relevant_watch_time):
        events = test[test["user_id"] == user]
        assert set(watch_time) == relevant == set(events["item_id"])
        for item, seconds in watch_time.items():
            assert seconds == pytest.approx(events.loc[events["item_id"] == item, "watch_time"].sum())


def test_ncf_validation_negatives_are_none_of_the_users_items(ncf, data):
    """Not even the user's test item, which leave-last-out of the training part alone would allow."""
    items = data.dataset.events.groupby("user_id")["item_id"].agg(frozenset)
    test_item = dict(zip(ncf.test.inputs[contract.USER_ID], ncf.test.inputs[contract.CANDIDATE_IDS][:, 0]))
    candidates = ncf.validation.inputs[contract.CANDIDATE_IDS]
    for user, row in zip(ncf.validation.inputs[contract.USER_ID], candidates):
        assert not set(row[1:]) & items[user] and test_item[user] not in set(row[1:])
        assert len(set(row[1:])) == len(row) - 1


def test_an_empty_split_reports_no_figures_rather_than_zeros(popularity, caplog):
    empty = SampledSet(inputs={**contexts([]), contract.CANDIDATE_IDS: np.zeros((0, 3), dtype=object)},
                       watch_time=np.zeros(0, dtype=np.float32))
    with caplog.at_level("WARNING", logger="trainer"):
        assert evaluate_sampled(popularity, empty) == {}
        assert evaluate_full(popularity, FullRankingSet(contexts=contexts([]), relevant=[], exclude=[],
                                                        pool=strings(["a", "b"])), [1]) == {}
    assert "no held-out examples" in caplog.text and "no test users" in caplog.text
