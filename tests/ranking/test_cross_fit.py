"""Cross-fitted retrieval_score features (ranking.retrieval_score_folds)."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from trainer.ranking.retrieval_feature import (
    OUT_OF_FOLD_SCORE,
    QUERY_INPUTS,
    OutOfFoldScores,
    cross_fit,
    scorer_for,
)


def test_out_of_fold_scores_use_each_rows_fold_and_zero_unknown_items():
    items = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2)  # [F, M, d]
    queries = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)
    scores = OutOfFoldScores(queries, np.array([0, 1, 1]), np.array(["a", "b", "c"], dtype=object), items)
    candidates = np.array([["a", "c"], ["b", "zz"], ["c", "a"]], dtype=object)
    expected = np.array([[items[0, 0] @ queries[0], items[0, 2] @ queries[0]],
                         [items[1, 1] @ queries[1], 0.0],
                         [items[1, 2] @ queries[2], items[1, 0] @ queries[2]]], np.float32)
    np.testing.assert_allclose(scores(candidates, chunk=2), expected)


def test_the_scorer_passes_precomputed_training_scores_through(retrieval_result, temporal):
    scorer = scorer_for(retrieval_result)
    rows = {name: values[:4] for name, values in temporal.test.inputs.items()}
    given = np.arange(4 * rows["candidate_ids"].shape[1], dtype=np.float32).reshape(4, -1)
    inputs = {name: tf.constant(_tensor_ready(values)) for name, values in rows.items()}
    np.testing.assert_array_equal(scorer({**inputs, OUT_OF_FOLD_SCORE: tf.constant(given)}).numpy(), given)
    assert not np.allclose(scorer(inputs).numpy(), given)


def test_cross_fitted_positives_score_like_unseen_events(retrieval_result, data, config):
    examples = data.train_examples
    out_of_fold = cross_fit(retrieval_result, data, examples, 2, config.seed, logging.getLogger("test"))
    assert 0.35 < out_of_fold.folds.mean() < 0.65  # two folds of about half the rows each
    catalogue = np.asarray(retrieval_result.item_ids, dtype=object).astype(str)
    rows = np.arange(min(400, len(examples["item_id"])))
    every_item = np.tile(catalogue, (len(rows), 1))
    positive_column = pd.Index(catalogue).get_indexer(np.asarray(examples["item_id"], dtype=object)[rows].astype(str))

    def percentile_of_positive(scores: np.ndarray) -> float:
        own = scores[rows, positive_column]
        return float((scores < own[:, None]).mean())

    held_out = percentile_of_positive(dataclasses.replace(
        out_of_fold, queries=out_of_fold.queries[rows], folds=out_of_fold.folds[rows])(every_item))
    inputs = {name: tf.constant(_tensor_ready(examples[name][rows])) for name in QUERY_INPUTS if name in examples}
    in_sample = percentile_of_positive(
        scorer_for(retrieval_result)({**inputs, "candidate_ids": tf.constant(every_item)}).numpy())
    assert in_sample > held_out  # a generator ranks its own training targets above events it never saw
    assert held_out > 0.5  # and still ranks unseen positives above most items
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_fit(retrieval_result, data, examples, 1, 0, logging.getLogger("test"))


def _tensor_ready(values: np.ndarray) -> np.ndarray:
    return values.astype(str) if values.dtype == object else values


@pytest.mark.parametrize(("model", "folds", "cross_fitted"), [("full", 2, True), ("full", 0, False),
                                                              ("neumf", 2, False)])
def test_training_rows_carry_cross_fitted_scores_only_for_the_full_model(temporal, retrieval_result, data, config,
                                                                          model, folds, cross_fitted):
    from trainer.ranking.train import FitOptions, row_recipe, with_candidate_generator

    config = dataclasses.replace(config, ranking=dataclasses.replace(config.ranking, model=model,
                                                                     retrieval_score_folds=folds))
    ranking_data = with_candidate_generator(temporal, config, data, retrieval_result, logging.getLogger("test"))
    assert (ranking_data.out_of_fold is not None) == cross_fitted
    options = FitOptions(epochs=1, batch_size=256, num_negatives=2, optimizer="adam", learning_rate=0.01, patience=0,
                         seed=0)
    inputs = row_recipe(ranking_data, ("user_id", "candidate_ids"), options).rows(ranking_data.train, 0)
    assert (OUT_OF_FOLD_SCORE in inputs) == cross_fitted
    if cross_fitted:
        assert ranking_data.out_of_fold is not None
        np.testing.assert_array_equal(inputs[OUT_OF_FOLD_SCORE], ranking_data.out_of_fold(inputs["candidate_ids"]))
        assert inputs[OUT_OF_FOLD_SCORE].shape == inputs["candidate_ids"].shape
