"""bench.quality: the splits and metrics by hand, and the whole section end to end in --quick mode."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pandas as pd
import pytest

from bench import quality
from bench.cli import ML_100K_DIR


def _events(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                         "timestamp": np.array([r[2] for r in rows], dtype=np.int64), "rating": 4.0})


def _catalogue_events() -> list[tuple[str, str, int]]:
    # Users a and b; items 1..120 so that 99 negatives can be drawn: one-event users pad the catalogue.
    rows = [("a", "1", 10), ("a", "2", 20), ("a", "3", 20), ("b", "1", 5), ("b", "4", 30), ("b", "5", 40)]
    rows += [(f"z{item}", str(item), 1) for item in range(6, 121)]
    return rows


def test_leave_last_out_breaks_timestamp_ties_by_the_larger_item_id() -> None:
    split = quality.make_split(_events(_catalogue_events()), "leave_last_out")
    held = dict(zip(split.users, split.targets))
    assert held["a"] == "3"  # "2" and "3" share timestamp 20: the larger id (as a string) is the later one
    assert held["b"] == "5"
    assert split.negatives.shape == (len(split.users), quality.NEGATIVES)
    row = list(split.users).index("a")
    assert not {"1", "2", "3"} & set(split.negatives[row])


def test_temporal_split_holds_out_unseen_items_and_targets_the_earliest() -> None:
    rows = _catalogue_events() + [("a", "2", 1000), ("a", "7", 1001), ("a", "6", 1002)] + [
        (f"y{item}", str(item), 999 + item) for item in range(121, 131)]
    split = quality.make_split(_events(rows), "temporal")
    row = list(split.users).index("a")
    assert split.relevant[row] == frozenset({"6", "7"})  # "2" was rated before the cut: not relevant
    assert split.targets[row] == "7"
    assert split.request_time[row] == 1001


def test_matrix_metrics_by_hand() -> None:
    train = _events([("a", "1", 1), ("a", "2", 2), ("b", "1", 1)])
    matrix = quality.Matrix.of(train, [str(i) for i in range(1, 101)])
    split = quality.EvalSplit(train, np.array(["a", "b"], dtype=object), [frozenset({"3"}), frozenset({"50"})],
                              np.array(["3", "50"], dtype=object),
                              np.array([[str(i) for i in range(4, 103) if i != 50][:99]] * 2, dtype=object),
                              np.array([3, 3]))
    scores = np.tile(-np.arange(100, dtype=np.float64), (2, 1))  # item i scores -(i - 1): "1" best
    figures = quality.score_matrix_metrics(lambda rows: scores[rows], matrix, split)
    # a: seen 1, 2 dropped, "3" ranks first; b: seen 1 dropped, "50" ranks 49th (after 2..49).
    assert figures["recall@10"] == pytest.approx(0.5)
    assert figures["recall@100"] == pytest.approx(1.0)
    assert figures["ndcg@10"] == pytest.approx(0.5)
    # NCF: a's target beats all its negatives (4..), b's target "50" is beaten by 4..49 (46 items).
    assert figures["ncf_hr@10"] == pytest.approx(0.5)
    assert figures["ncf_ndcg@10"] == pytest.approx(0.5)


@pytest.mark.skipif(not (ML_100K_DIR / "u.data").is_file(), reason="ml-100k is not in ../shared/data")
def test_quick_section_end_to_end(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "quality.json"
    quality.main(["--quick", "--out", str(out), "--splits", "leave_last_out"])  # temporal: by hand above
    result = json.loads(out.read_text())
    assert result["section"] == "quality" and result["quick"] is True
    systems = {quality.RETRIEVAL, quality.TWO_STAGE, "popularity", "EASE", "implicit ALS", "implicit BPR",
               "TFRS basic tutorial", "TFRS deep tutorial [64, 32]"}
    assert set(result["splits"]) == {"leave_last_out"}
    for kind, part in result["splits"].items():
        assert set(part["summary"]) == systems
        assert len(part["per_seed"]) == 1
        for system, figures in part["summary"].items():
            for figure, cell in figures.items():
                assert 0.0 <= cell["min"] <= cell["median"] <= cell["max"] <= 1.0, (kind, system, figure)
            assert figures["recall@100"]["median"] >= figures["recall@10"]["median"]
        assert "ncf_hr@10" in part["summary"][quality.TWO_STAGE]
        assert "ncf_hr@10" not in part["summary"][quality.RETRIEVAL]
    assert result["splits"]["leave_last_out"]["users"] == quality.QUICK_USERS
    titles = [table["title"] for table in result["tables"]]
    assert any("targets" in title for title in titles)
