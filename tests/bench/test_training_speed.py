"""The training-speed section's before/after table: rows matched by model and what was timed, ratio = now / before."""

from __future__ import annotations

import pytest

from bench.training_speed import comparison


def row(model: str, timed: str, examples_per_s: float) -> dict:
    return {"model": model, "timed": timed, "examples_per_s": examples_per_s}


def test_each_model_is_compared_with_its_own_baseline_row() -> None:
    baseline = [row("ranking (full)", "training only", 200.0), row("retrieval", "warm", 1000.0)]
    current = [row("retrieval", "warm", 1500.0), row("ranking (full)", "training only", 100.0),
               row("ranking (neumf)", "training only", 50.0)]  # no baseline row: left out
    table = comparison(current, baseline, "abc123")
    assert [(r["model"], r["ratio"]) for r in table["rows"]] == [("retrieval", 1.5), ("ranking (full)", 0.5)]
    assert table["rows"][0]["examples_per_s (abc123)"] == pytest.approx(1000.0)
    assert "abc123" in table["title"]
