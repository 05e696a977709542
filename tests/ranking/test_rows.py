"""Ranking training rows: negatives outside the user's training items, drawn per example, and the candidate pools."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from trainer.data.schema import DataError
from trainer.ranking.rows import CandidatePools, NegativeDraws, check_global_batch_size

ITEMS = ["a", "b", "c", "d", "e"]


def drawn(negatives: NegativeDraws, users: list[str], watched: list[str], epoch: int = 0,
          keys: list[str] | None = None, history: list[list[str]] | None = None) -> np.ndarray:
    """[B, N] str negatives of examples (keys default to user|watched item; histories to none)."""
    keys = keys or [f"{user}|{item}" for user, item in zip(users, watched, strict=True)]
    own = [[item, *(history[row] if history else [])] for row, item in enumerate(watched)]
    draw = negatives.in_graph()
    values = tf.function(lambda *inputs: draw(*inputs, epoch))(tf.constant(keys), tf.constant(users), tf.constant(own))
    return values.numpy().astype(str)


def test_negatives_avoid_the_users_training_items_and_the_watched_item():
    seen = {"u1": frozenset({"a", "b", "c"}), "u2": frozenset({"zz-not-in-the-vocabulary"})}
    draws = drawn(NegativeDraws(ITEMS, seen, 200, seed=0), ["u1", "u2", "u1", "u3"], ["a", "zz", "b", "e"])
    assert set(draws[0]) == set(draws[2]) == {"d", "e"}
    assert set(draws[1]) == set(ITEMS)  # u2's one item is not in the vocabulary, its watch neither
    assert set(draws[3]) == {"a", "b", "c", "d"}  # a user without training items avoids the watched item only


def test_negatives_avoid_the_examples_own_history_beyond_the_users_known_items():
    """A streamed example's user may have training items outside the in-memory sample: its history still counts."""
    draws = drawn(NegativeDraws(ITEMS, {"u1": frozenset({"a"})}, 200, seed=2), ["u1", "u1"], ["b", "b"],
                  history=[["c", ""], ["", ""]], keys=["first", "second"])
    assert set(draws[0]) == {"d", "e"} and set(draws[1]) == {"c", "d", "e"}


def test_draws_are_uniform_over_the_allowed_items():
    draws = drawn(NegativeDraws(ITEMS, {"u1": frozenset({"a", "b"})}, 5, seed=1), ["u1"] * 2000,
                  ["a"] * 2000, keys=[str(row) for row in range(2000)])
    counts = np.array([(draws == item).sum() for item in ("c", "d", "e")])  # 10,000 draws over 3 items
    np.testing.assert_allclose(counts / counts.sum(), 1 / 3, atol=0.02)
    assert not np.isin(draws, ["a", "b"]).any()


def test_an_examples_negatives_depend_on_the_example_seed_and_epoch_alone():
    negatives = NegativeDraws([f"i{n}" for n in range(100)], {}, 6, seed=3)
    users, watched = [f"u{n}" for n in range(8)], [f"i{n}" for n in range(8)]
    together = drawn(negatives, users, watched)
    reversed_alone = np.concatenate([drawn(negatives, [u], [w]) for u, w in zip(users[::-1], watched[::-1],
                                                                              strict=True)])
    np.testing.assert_array_equal(reversed_alone[::-1], together)
    assert (drawn(negatives, users, watched, epoch=1) != together).mean() > 0.8
    reseeded = NegativeDraws([f"i{n}" for n in range(100)], {}, 6, seed=4)
    assert (drawn(reseeded, users, watched) != together).mean() > 0.8


def test_candidate_columns_come_from_the_users_pool_and_pads_draw_uniformly():
    seen = {"u1": frozenset({"a"}), "u2": frozenset({"b"})}
    pools = CandidatePools(users=np.array(["u2", "u1"], dtype=object),
                           items=np.array([["c", "d"], ["e", ""]], dtype=object))
    items = ["a", "b", "c", "d", "e", "f"]
    draws = drawn(NegativeDraws(items, seen, 300, seed=0, pools=pools, from_candidates=200),
                  ["u1", "u2", "u3"], ["a", "b", "x"])
    candidates, uniform = draws[:, :200], draws[:, 200:]
    assert set(candidates[1]) == {"c", "d"}  # u2's pool, both entries
    assert set(candidates[0]) == {"b", "c", "d", "e", "f"}  # u1's pool is "e" and a pad: pads draw uniformly
    assert (candidates[0] == "e").mean() > 0.45
    assert set(candidates[2]) == set(uniform[2]) == set(items)  # u3 has no pool
    assert set(uniform[0]) == {"b", "c", "d", "e", "f"} and set(uniform[1]) == {"a", "c", "d", "e", "f"}


@pytest.mark.parametrize(("items", "seen", "num", "pools", "from_candidates", "error", "message"), [
    (["a", "b"], {"u1": frozenset({"a", "b"})}, 1, None, 0, DataError, "user 'u1' has watched all 2 items"),
    ([], {}, 1, None, 0, DataError, "the item vocabulary is empty"),
    (["a", "b"], {}, 2, None, 1, ValueError, "1 candidate negatives per row need the candidate generator's pools"),
    (["a", "b"], {}, 2, CandidatePools(np.array(["u1"], dtype=object), np.array([["b"]], dtype=object)), 3,
     ValueError, r"candidate_negatives in \[0, num_negatives=2\], got 2 and 3"),
])
def test_draws_that_cannot_be_made_are_refused(items, seen, num, pools, from_candidates, error, message):
    with pytest.raises(error, match=message):
        NegativeDraws(items, seen, num, seed=0, pools=pools, from_candidates=from_candidates)


def test_an_example_whose_own_items_cover_the_vocabulary_is_refused_by_name():
    with pytest.raises(tf.errors.InvalidArgumentError, match="(?s)no unwatched item for examples of the users.*u7"):
        drawn(NegativeDraws(["a", "b", "c"], {}, 1, seed=0), ["u1", "u7"], ["a", "a"], history=[["", ""], ["b", "c"]])


def test_a_batch_that_does_not_split_evenly_over_the_replicas_is_refused() -> None:
    class ThreeReplicas:
        num_replicas_in_sync = 3

    with pytest.raises(ValueError, match=r"ranking.batch_size \(256\) must be a multiple of the 3 replicas"):
        check_global_batch_size(ThreeReplicas(), 256)  # type: ignore[arg-type]
    check_global_batch_size(ThreeReplicas(), 255)  # type: ignore[arg-type]
