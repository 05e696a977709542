"""The in-graph drop of seen items (unseen_top_k) against a NumPy reference."""

import numpy as np
import pytest

from trainer.retrieval.inference import PAD_SCORE, unseen_top_k


def numpy_unseen_top_k(item_ids: np.ndarray, scores: np.ndarray, seen: np.ndarray, k: int
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The first k candidates of each best-first row that are not seen, not "" and of finite score, padded."""
    ids_out = np.full((len(item_ids), k), "", dtype=object)
    scores_out = np.full((len(item_ids), k), PAD_SCORE, dtype=np.float32)
    for row, (ids, row_scores, row_seen) in enumerate(zip(item_ids, scores, seen)):
        kept = [(i, s) for i, s in zip(ids, row_scores) if i not in set(row_seen) and i != "" and np.isfinite(s)][:k]
        for column, (item, score) in enumerate(kept):
            ids_out[row, column], scores_out[row, column] = item, score
    return ids_out, scores_out


def best_first_candidates(rng: np.random.Generator, rows: int, width: int, catalogue: int
                          ) -> tuple[np.ndarray, np.ndarray]:
    ids = np.array([rng.choice(catalogue, width, replace=False) for _ in range(rows)])
    scores = -np.sort(-rng.normal(size=(rows, width)).astype(np.float32), axis=1)
    return np.char.add("i", ids.astype(str)).astype(object), scores


def decoded(ids) -> np.ndarray:
    return np.char.decode(ids.numpy().astype(bytes), "utf-8").astype(object)


@pytest.mark.parametrize("complete", [False, True])
@pytest.mark.parametrize(("width", "history", "k"), [(12, 2, 10), (30, 20, 10), (10, 0, 10), (40, 35, 5)])
def test_keeps_the_first_k_unseen_candidates_in_their_order(complete, width, history, k):
    rng = np.random.default_rng(width * 100 + history)
    ids, scores = best_first_candidates(rng, rows=6, width=width, catalogue=60)
    seen = np.array([rng.choice(row, history, replace=False) if history else row[:0] for row in ids]).reshape(6, -1)
    if history:
        seen[:, 0] = ""  # a pad in the history drops nothing
    expected_ids, expected_scores = numpy_unseen_top_k(ids, scores, seen, k)
    got_ids, got_scores = unseen_top_k(ids.astype(str), scores, seen.astype(str), k, complete=complete)
    np.testing.assert_array_equal(decoded(got_ids), expected_ids)
    np.testing.assert_array_equal(got_scores.numpy(), expected_scores)


def test_equal_scores_keep_the_search_order():
    ids = np.array([["d", "a", "c", "b", "e"]])
    got_ids, _ = unseen_top_k(ids, np.ones((1, 5), np.float32), np.array([["a"]]), 3, complete=True)
    np.testing.assert_array_equal(decoded(got_ids), [["d", "c", "b"]])


def test_a_short_result_with_missing_neighbours_ends_in_pads():
    ids = np.array([["a", "b", "c", "d"]])
    scores = np.array([[3.0, np.nan, 2.0, 1.0]], np.float32)
    got_ids, got_scores = unseen_top_k(ids, scores, np.array([["c", ""]]), 5)
    np.testing.assert_array_equal(decoded(got_ids), [["a", "d", "", "", ""]])
    np.testing.assert_array_equal(got_scores.numpy(), [[3.0, 1.0] + [PAD_SCORE] * 3])
