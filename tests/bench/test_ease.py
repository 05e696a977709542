"""bench.ease: the closed form against per-column ridge regressions, and the NCF-protocol metrics by hand."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from bench import ease

ML_100K = pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ml-100k"


def test_ease_weights_solve_each_column_s_ridge_regression() -> None:
    rng = np.random.default_rng(0)
    interactions = (rng.random((60, 8)) < 0.3).astype(np.float32)
    l2 = 3.0
    weights = ease.ease_weights(interactions, l2)
    x = interactions.astype(np.float64)
    for j in range(x.shape[1]):
        others = [i for i in range(x.shape[1]) if i != j]
        design = x[:, others]
        expected = np.linalg.solve(design.T @ design + l2 * np.eye(len(others)), design.T @ x[:, j])
        np.testing.assert_allclose(weights[others, j], expected, rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(np.diag(weights), 0.0)


def test_ease_rejects_a_non_positive_l2() -> None:
    with pytest.raises(ValueError, match="l2 > 0"):
        ease.ease_weights(np.ones((2, 2), np.float32), 0.0)


def test_interaction_matrix_marks_events_and_ignores_unknown_items() -> None:
    events = pd.DataFrame({"user_id": ["u1", "u2", "u2", "u1"], "item_id": ["a", "c", "a", "zzz"]})
    matrix = ease.interaction_matrix(events, ["u1", "u2"], pd.Index(["a", "b", "c"]))
    np.testing.assert_array_equal(matrix, [[1, 0, 0], [1, 0, 1]])


def test_evaluate_matches_hand_computed_ranks() -> None:
    scores = np.array([
        [0.9, 0.1, 0.5, 0.3, 0.8, 0.0],   # target 0 beats both negatives: rank 0; item 4 is seen
        [0.2, 0.7, 0.6, 0.9, 0.1, 0.0],   # target 2 is beaten by negative 3: rank 1
    ])
    eval_set = ease.EvalSet(
        history=np.array([[0, 0, 0, 0, 1, 0], [0, 0, 0, 0, 0, 1]], np.float32),
        targets=np.array([0, 2]),
        negatives=np.array([[1, 3], [3, 5]]),
        user_ids=np.array(["u1", "u2"], dtype=object),
    )
    figures = ease.evaluate(scores, eval_set)
    assert figures["hr@10"] == 1.0
    assert figures["ndcg@10"] == pytest.approx((1.0 + 1.0 / np.log2(3)) / 2)
    # Full ranking with seen items removed: user 1 ranks item 0 first; user 2 ranks 3, 1, 2, ... (item 2 third).
    assert figures["recall@10"] == 1.0
    assert figures["ndcg_full@10"] == pytest.approx((1.0 + 1.0 / np.log2(4)) / 2)


def test_synthetic_run_orders_ceiling_above_ease_above_popularity() -> None:
    dataset, config = ease.load("synthetic", ML_100K, quick=True)
    result = ease.run_dataset(dataset, config, [200.0], "synthetic")
    rows = {row["model"].split(" (")[0]: row for row in result["rows"]}
    assert set(rows) == {"EASE", "ItemPop", "planted model"}
    assert rows["planted model"]["test_hr@10"] > rows["EASE"]["test_hr@10"] > rows["ItemPop"]["test_hr@10"]
    assert result["users"] == len(dataset.events["user_id"].unique())


def test_missing_movielens_is_reported_not_fatal(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ease, "L2_GRID", (300.0,))
    monkeypatch.setattr(ease, "QUICK_L2_GRID", (300.0,))
    out = tmp_path / "ease.json"
    ease.main(["--out", str(out), "--quick", "--data-dir", str(tmp_path / "nowhere")])
    result = json.loads(out.read_text())
    assert "no u.data" in result["skipped_parts"]["ml-100k"]
    assert [t["title"].split(":")[0] for t in result["tables"]] == ["synthetic", "synthetic"]


@pytest.mark.skipif(not (ML_100K / "u.data").is_file(), reason=f"ml-100k not found at {ML_100K}")
def test_ml100k_ease_beats_popularity_under_the_ncf_protocol() -> None:
    dataset, config = ease.load("ml-100k", ML_100K, quick=True)
    result = ease.run_dataset(dataset, config, [500.0], "ml-100k")
    ease_row, pop_row = result["rows"]
    assert result["users"] == 943 and result["items"] == 1682
    assert ease_row["test_hr@10"] > pop_row["test_hr@10"] + 0.15
    assert 0.5 < ease_row["test_hr@10"] < 0.9  # EASE's published range on ml-100k under this protocol
