"""bench.youtube_paper's arithmetic: medians over seeds, top-K figures, and the plot's panels."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench import figures, youtube_paper


def test_medians_are_per_model_over_the_seeds_that_have_the_figure() -> None:
    rows = [{"model": "a", "loss": 0.3}, {"model": "b", "loss": 0.5}, {"model": "a", "loss": 0.1},
            {"model": "a", "loss": 0.2}, {"model": "b", "loss": None}]
    assert youtube_paper.medians(rows, ["loss"]) == [{"model": "a", "seeds": 3, "loss": 0.2},
                                                     {"model": "b", "seeds": 2, "loss": 0.5}]


@dataclasses.dataclass
class _World:
    clickbait: np.ndarray


@dataclasses.dataclass
class _Truth:
    item_ids: np.ndarray
    world: _World


def test_top_k_figures_count_clickbait_and_sum_the_planted_value() -> None:
    pool = np.array(["a", "b", "c", "d"], dtype=object)
    truth = _Truth(pool, _World(np.array([False, True, False, True])))
    value = np.array([[1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]])
    ranked = np.array([["b", "c"], ["a", "c"]], dtype=object)
    figures_ = youtube_paper.top_k_figures(ranked, truth, value, pool)
    assert figures_["clickbait_share"] == pytest.approx(0.25)  # one of four recommendations
    assert figures_["watch_time_per_user"] == pytest.approx(((2 + 3) + (10 + 30)) / 2)


def test_the_plot_panels_come_from_the_median_tables() -> None:
    section = {"tables": [
        {"rows": [{"model": "weighted LR", "weighted_per_user_loss": 0.3, "clickbait_share": 0.05},
                  {"model": "unweighted LR", "weighted_per_user_loss": 0.4, "clickbait_share": 0.5}]},
        {"rows": [{"model": "planted model (truth)", "fresh_top_k_share": 0.3}]}]}
    panels = figures.youtube_panels(section)
    assert panels["Clickbait share of the top 10"] == {"weighted LR": 0.05, "unweighted LR": 0.5}
    assert panels["Share of the top 10 uploaded in the last 7 days"] == {"planted model (truth)": 0.3}
    assert panels["Hold-out Recall@50 of the candidate generator"] == {}
