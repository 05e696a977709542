"""The retrieval loss against NumPy: in-batch softmax, logQ correction and accidental-hit removal."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tests.retrieval.test_model import make_model, requests
from trainer.retrieval.features import CANDIDATE_PROBABILITY

# Four training rows; rows 0 and 2 watched the same item, so in-batch each is the other's accidental hit.
WATCHED = np.array(["i1", "i2", "i1", "i3"], dtype=object)
PROBABILITY = np.array([0.5, 0.2, 0.5, 0.05], dtype=np.float32)


def _batch() -> dict[str, tf.Tensor]:
    rows = requests(
        user_id=np.array(["u1", "u2", "u2", "u1"], dtype=object),
        watch_history=np.array([["", "i2"], ["i3", "i1"], ["i2", ""], ["i1", "i2"]], dtype=object),
        search_history=np.array([["jazz"], ["news"], [""], ["jazz"]], dtype=object),
        gender=np.array(["F", "M", "M", "F"], dtype=object),
        occupation=np.array(["writer", "", "writer", ""], dtype=object),
        region=np.array(["r1", "r2", "r1", "r2"], dtype=object),
        age=np.array([30, 0, 22, 41], dtype=np.int64),
        request_time=np.zeros(4, dtype=np.int64),
    )
    batch = {name: tf.constant(values.astype(str) if values.dtype == object else values)
             for name, values in rows.items()}
    batch["item_id"] = tf.constant(WATCHED.astype(str))
    batch[CANDIDATE_PROBABILITY] = tf.constant(PROBABILITY)
    return batch


def _numpy_loss(queries: np.ndarray, candidates: np.ndarray, logq: bool, remove_hits: bool) -> float:
    """Sum over rows of -log softmax(row)[own column], written out by hand."""
    logits = queries.astype(np.float64) @ candidates.astype(np.float64).T
    if logq:
        logits = logits - np.log(PROBABILITY.astype(np.float64))[None, :]
    total = 0.0
    for row in range(len(WATCHED)):
        keep = np.ones(len(WATCHED), bool)
        if remove_hits:
            keep &= ~((WATCHED == WATCHED[row]) & (np.arange(len(WATCHED)) != row))
        row_logits = logits[row, keep]
        own = logits[row, row]
        total += np.log(np.exp(row_logits - row_logits.max()).sum()) + row_logits.max() - own
    return total


@pytest.mark.parametrize("logq", [False, True], ids=["no-logq", "logq"])
@pytest.mark.parametrize("remove_hits", [False, True], ids=["keep-hits", "remove-hits"])
def test_the_loss_is_the_corrected_in_batch_softmax(logq: bool, remove_hits: bool) -> None:
    tf.random.set_seed(3)
    model = make_model(logq_correction=logq, remove_accidental_hits=remove_hits)
    batch = _batch()
    queries = model.query_tower(batch).numpy()
    candidates = model.candidate_tower(batch["item_id"]).numpy()

    loss = float(model.compute_loss(batch))

    assert loss == pytest.approx(_numpy_loss(queries, candidates, logq, remove_hits), rel=1e-4)


def _losses(batch: dict[str, tf.Tensor]) -> dict[tuple[bool, bool], float]:
    """The loss of one set of weights under each (logq, remove_hits) setting."""
    tf.random.set_seed(3)
    base = make_model(logq_correction=False, remove_accidental_hits=False)
    base.compute_loss(batch)  # builds the weights
    losses = {}
    for logq in (False, True):
        for remove_hits in (False, True):
            model = make_model(logq_correction=logq, remove_accidental_hits=remove_hits)
            model.compute_loss(batch)
            model.set_weights(base.get_weights())
            losses[logq, remove_hits] = float(model.compute_loss(batch))
    return losses


def test_removing_accidental_hits_lowers_the_loss() -> None:
    losses = _losses(_batch())
    # Dropping an accidental hit removes a term from a softmax denominator: the loss can only fall.
    assert losses[False, True] < losses[False, False]
    assert losses[True, True] < losses[True, False]


@pytest.mark.parametrize("uniform", [True, False], ids=["uniform-q", "skewed-q"])
def test_logq_changes_the_loss_only_for_unequal_probabilities(uniform: bool) -> None:
    batch = _batch()
    if uniform:  # -log q shifts every logit of a row equally, which the softmax ignores
        batch[CANDIDATE_PROBABILITY] = tf.fill([len(WATCHED)], 0.25)
    losses = _losses(batch)
    same = losses[True, False] == pytest.approx(losses[False, False], rel=1e-5)
    assert same is uniform
