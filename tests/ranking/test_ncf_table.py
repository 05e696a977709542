"""The benchmark's adapter for the `implicit` baselines: the same ids, the same evaluation code."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from bench.ncf_table import FactorModel, evaluate, fit_implicit
from recsys_common import contract
from trainer.ranking.models import ItemPop
from trainer.ranking.train import fit


def test_factor_model_scores_dot_products_and_zero_for_unknown_ids():
    users, items = np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    model = FactorModel(["u1", "u2"], ["a", "b", "c", "d"], users, items)
    logits = model.logits({contract.USER_ID: tf.constant(["u2", "nobody"]),
                           contract.CANDIDATE_IDS: tf.constant([["d", "a", "new"], ["a", "b", "c"]])}).numpy()
    np.testing.assert_allclose(logits[0], [users[1] @ items[3], users[1] @ items[0], 0.0])
    np.testing.assert_array_equal(logits[1], [0.0, 0.0, 0.0])


@pytest.mark.parametrize(("kind", "params"), [
    ("als", {"factors": 8, "regularization": 0.1, "alpha": 10.0, "iterations": 5}),
    ("bpr", {"factors": 8, "learning_rate": 0.05, "regularization": 0.01, "iterations": 30}),
])
def test_implicit_baselines_learn_more_than_popularity(ncf, kind, params):
    popularity = ItemPop(ncf.space)
    fit(popularity, ncf, options=_options())
    assert evaluate(fit_implicit(kind, ncf, params, seed=1), ncf)["test_hr@10"] > \
        evaluate(popularity, ncf)["test_hr@10"] + 0.05


def _options():
    from trainer.ranking.train import FitOptions

    return FitOptions(epochs=1, batch_size=256, num_negatives=1, optimizer="adam", learning_rate=0.01, patience=0,
                      seed=0)
