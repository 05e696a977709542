"""bench.two_stage: the per-seed summary against NumPy, the tables and notes built from it, and skipping."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np
import pytest

from bench import two_stage

# Per-seed figures (retrieval alone, two-stage) for each of two_stage.FIGURES.
HAND_MADE = {
    42: {"recall@10": (0.20, 0.25), "recall@50": (0.40, 0.38), "ndcg_full@10": (0.30, 0.33), "ndcg_full@50": (.1, .2),
         "watch_time_recall@10": (0.20, 0.30), "watch_time_recall@50": (0.5, 0.6)},
    43: {"recall@10": (0.10, 0.15), "recall@50": (0.50, 0.55), "ndcg_full@10": (0.20, 0.18), "ndcg_full@50": (.2, .2),
         "watch_time_recall@10": (0.10, 0.12), "watch_time_recall@50": (0.4, 0.3)},
    44: {"recall@10": (0.40, 0.30), "recall@50": (0.45, 0.50), "ndcg_full@10": (0.25, 0.30), "ndcg_full@50": (.4, .5),
         "watch_time_recall@10": (0.30, 0.33), "watch_time_recall@50": (0.6, 0.7)},
}


def seed_rows(seeds: list[int]) -> list[dict[str, float]]:
    rows = []
    for seed in seeds:
        row: dict[str, float] = {"seed": seed, "two_stage_candidate_recall": 0.5,
                                 "ranking_epochs": 5, "retrieval_s": 10.0 + seed - 42, "ranking_s": 20.0}
        for figure, (alone, both) in HAND_MADE[seed].items():
            row[f"retrieval_only_{figure}"], row[f"two_stage_{figure}"] = alone, both
        rows.append(row)
    return rows


@pytest.mark.parametrize("seeds", [[42, 43, 44], [42, 44], [43]])
def test_summary_matches_numpy_medians_and_ratios(seeds: list[int]) -> None:
    summary = {row["figure"]: row for row in two_stage.summarise(seed_rows(seeds))}
    assert list(summary) == ["recall@10", "recall@50", "ndcg_full@10", "ndcg_full@50", "watch_time_recall@10",
                             "watch_time_recall@50"]
    for figure, row in summary.items():
        alone = np.array([HAND_MADE[s][figure][0] for s in seeds])
        both = np.array([HAND_MADE[s][figure][1] for s in seeds])
        assert row["retrieval_only"] == pytest.approx(np.median(alone))
        assert row["two_stage"] == pytest.approx(np.median(both))
        assert row["ratio_of_medians"] == pytest.approx(np.median(both) / np.median(alone))
        assert row["median_ratio"] == pytest.approx(np.median(both / alone))
        assert row["min_ratio"] == pytest.approx(np.min(both / alone))
        assert row["max_ratio"] == pytest.approx(np.max(both / alone))
        assert row["two_stage_better"] == f"{np.sum(both > alone)}/{len(seeds)}"


def test_summary_by_hand_for_three_seeds() -> None:
    recall_10 = two_stage.summarise(seed_rows([42, 43, 44]))[0]
    # Per-seed ratios 1.25, 1.5, 0.75; medians 0.25 (two-stage) and 0.20 (retrieval alone).
    assert recall_10["median_ratio"] == pytest.approx(1.25)
    assert recall_10["ratio_of_medians"] == pytest.approx(1.25)
    assert (recall_10["min_ratio"], recall_10["max_ratio"]) == (pytest.approx(0.75), pytest.approx(1.5))
    assert recall_10["two_stage_better"] == "2/3"


def test_a_zero_baseline_gives_no_ratio_instead_of_infinity() -> None:
    rows = seed_rows([42, 43])
    rows[0]["retrieval_only_recall@10"] = 0.0
    recall_10 = two_stage.summarise(rows)[0]
    assert recall_10["median_ratio"] == pytest.approx(0.15 / 0.10)  # only seed 43 has a ratio
    assert recall_10["ratio_of_medians"] == pytest.approx(np.median([0.25, 0.15]) / np.median([0.0, 0.10]))
    rows[1]["retrieval_only_recall@10"] = 0.0
    recall_10 = two_stage.summarise(rows)[0]
    assert recall_10["ratio_of_medians"] is None and recall_10["median_ratio"] is None
    assert recall_10["min_ratio"] is None and recall_10["two_stage_better"] == "2/2"


def test_tables_and_notes_show_the_summary_and_a_median_row_over_seeds() -> None:
    rows = seed_rows([42, 43, 44])
    parts: dict[str, dict[str, Any]] = {
        "ml-100k": {"skipped": "no u.data"},
        "synthetic": {"per_seed": rows, "summary": two_stage.summarise(rows), "test_users": 166, "candidates": 100},
    }
    summary_table, seed_table = two_stage.tables(parts)
    assert summary_table["title"].startswith("synthetic:") and "3 seed(s)" in summary_table["title"]
    assert [row["figure"] for row in summary_table["rows"]] == list(two_stage.FIGURES)
    assert seed_table["rows"][:3] == rows
    median = seed_table["rows"][3]
    assert median["seed"] == "median"
    assert median["two_stage_ndcg_full@10"] == pytest.approx(0.30)
    assert median["retrieval_s"] == pytest.approx(11.0)
    assert all(column in median for column in seed_table["columns"])
    headline = [note for note in two_stage.notes(parts) if note.startswith("synthetic:")]
    assert len(headline) == 1
    assert "recall@10 0.250 vs 0.200 (median ratio 1.250, range 0.750–1.500, better in 2/3 seeds)" in headline[0]
    assert not any(note.startswith("ml-100k:") for note in two_stage.notes(parts))


def test_a_single_seed_has_no_median_row() -> None:
    rows = seed_rows([43])
    parts = {"ml-100k": {"per_seed": rows, "summary": two_stage.summarise(rows), "test_users": 1, "candidates": 100}}
    assert two_stage.tables(parts)[1]["rows"] == rows
    headline = two_stage.notes(parts)[-1]
    assert headline.startswith("ml-100k:") and "recall@10 0.150 vs 0.100 (ratio 1.500, one seed)" in headline


@pytest.mark.parametrize("quick", [False, True])
def test_part_configs_are_valid_and_skip_the_comparison_table(tmp_path: pathlib.Path, quick: bool) -> None:
    ml = two_stage.load_part_config("ml-100k", tmp_path, quick)
    synthetic = two_stage.load_part_config("synthetic", tmp_path, quick)
    assert (ml.data.source, ml.data.data_dir, ml.data.download) == ("ml-100k", str(tmp_path), False)
    assert synthetic.data.source == "synthetic"
    for config in (ml, synthetic):
        assert config.ranking.compare == [] and config.ranking.eval_ks == [10, 50]
        assert config.ranking.model == "full" and config.ranking.rerank_candidates == 100
        assert (config.retrieval.epochs, config.ranking.epochs) == ((2, 2) if quick else (5, 5))
    assert synthetic.synthetic.num_users == (400 if quick else 2000)


def test_without_ml_100k_the_section_writes_skipped(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "two_stage.json"
    two_stage.main(["--out", str(out), "--data-dir", str(tmp_path / "absent"), "--parts", "ml-100k"])
    result = json.loads(out.read_text())
    assert result["section"] == "two_stage"
    assert result["skipped"] == f"ml-100k: no u.data in {tmp_path / 'absent'} (pass --data-dir)"
    assert "tables" not in result


def test_only_ml_100k_needs_a_data_folder(tmp_path: pathlib.Path) -> None:
    assert two_stage.missing_data("synthetic", tmp_path) is None
    assert "no u.data" in str(two_stage.missing_data("ml-100k", tmp_path))
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    assert two_stage.missing_data("ml-100k", tmp_path) is None


def test_unknown_parts_are_rejected_by_name(capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        two_stage.main(["--out", str(tmp_path / "x.json"), "--parts", "ml-100k,ml-20m"])
    assert exit_info.value.code == 2
    assert "unknown part(s) ml-20m" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_planted_order_ranks_candidates_by_the_true_affinity_and_pads_last() -> None:
    from trainer.data.synthetic import PlantedModel
    from trainer.ranking.protocol import FullRankingSet

    truth = PlantedModel(user_ids=np.array(["u1", "u2"], dtype=object),
                         item_ids=np.array(["a", "b", "c"], dtype=object),
                         user_vectors=np.array([[1.0], [-1.0]]), item_vectors=np.array([[1.0], [2.0], [3.0]]),
                         item_bias=np.zeros(3), temperature=1.0)
    full = FullRankingSet(contexts={"user_id": np.array(["u1", "u2"], dtype=object)}, relevant=[frozenset()] * 2,
                          exclude=[frozenset()] * 2, pool=np.array(["a", "b", "c"], dtype=object))
    candidates = np.array([["a", "", "c", "b"], ["c", "a", "b", ""]], dtype=object)
    np.testing.assert_array_equal(two_stage.planted_order(truth, full, candidates),
                                  [["c", "b", "a", ""], ["a", "b", "c", ""]])


def test_the_per_seed_table_shows_the_planted_ceiling_only_where_every_seed_has_it() -> None:
    rows = seed_rows([42, 43])
    assert not any(column.startswith("planted_") for column in two_stage.per_seed_columns(rows))
    for row in rows:
        row.update({f"planted_{figure}": 0.9 for figure in two_stage.FIGURES})
    columns = two_stage.per_seed_columns(rows)
    assert [c for c in columns if c.startswith("planted_")] == [f"planted_{f}" for f in two_stage.FIGURES]
    assert any("ordered by the planted model" in note for note in two_stage.notes(
        {"synthetic": {"per_seed": rows, "summary": two_stage.summarise(rows), "test_users": 1, "candidates": 4}}))
