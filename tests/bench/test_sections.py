"""The sections' shared parts: machine info, the JSON they write, and training_speed's arithmetic."""

from __future__ import annotations

import json
import pathlib
import platform
import sys

import numpy as np
import pytest

from bench import cli, machine, training_speed


def test_machine_info_describes_this_process() -> None:
    info = machine.machine_info()
    assert 1 <= info["usable_cores"] <= info["logical_cores"]
    assert info["python"] == platform.python_version()
    assert info["ram_gib"] >= info["available_ram_gib"] > 0
    assert info["libraries"]["numpy"] == np.__version__


def test_missing_libraries_have_no_version() -> None:
    assert machine.library_versions(("numpy", "no-such-distribution-xyz")) == {
        "numpy": np.__version__, "no-such-distribution-xyz": None}


def test_section_result_writes_figures_machine_and_command(tmp_path: pathlib.Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["x.py", "--out", "f.json"])
    result = cli.SectionResult("demo", quick=True)
    result.payload.update({"qps": np.float32(2.5), "ids": np.arange(3), "where": pathlib.Path("a/b")})
    written = json.loads(result.write(tmp_path / "deep" / "demo.json").read_text())
    assert written["section"] == "demo" and written["quick"] is True and written["wall_s"] >= 0
    assert written["qps"] == 2.5 and written["ids"] == [0, 1, 2] and written["where"] == "a/b"
    assert written["machine"]["usable_cores"] >= 1
    assert written["command"].endswith("--out f.json")


def test_speed_row_uses_the_median_of_the_epochs_after_the_first() -> None:
    row = training_speed.speed_row("m", 1000, [5.0, 1.0, 3.0, 2.0], "training only")
    assert row["first_epoch_s"] == 5.0 and row["epoch_s_median"] == 2.0 and row["examples_per_s"] == 500.0
    single = training_speed.speed_row("m", 1000, [4.0], "training only")
    assert single["epoch_s_median"] == 4.0 and single["examples_per_s"] == 250.0


def test_epoch_timer_records_the_time_between_callbacks() -> None:
    ticks = iter([10.0, 12.5, 13.0])
    timer = training_speed.EpochTimer(clock=lambda: next(ticks))
    timer(1, {})
    timer(2, {})
    assert timer.seconds == [2.5, 0.5]
