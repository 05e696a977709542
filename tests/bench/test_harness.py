"""bench.harness and `python -m bench`: each way a section can end, and a quick report end to end."""

from __future__ import annotations

import json
import pathlib
import re
import subprocess
import sys

import pytest

from bench import harness
from bench.harness import FAILED, NOT_AVAILABLE, NOT_SELECTED, OK, REUSED, SKIPPED, TIMEOUT, SectionSpec

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def stand_in(module: str) -> SectionSpec:
    return SectionSpec(module, module.replace("_", " "), 60, 60, module=module)


@pytest.mark.usefixtures("section_modules")
@pytest.mark.parametrize("module, status, reason", [
    ("failing_section", FAILED, "exit status 1: RuntimeError: the benchmark broke: no such model"),
    ("skipping_section", SKIPPED, "the trainer is not there yet"),
    ("silent_section", FAILED, "exited 0 but wrote no silent_section.json"),
    ("no_such_section_module", NOT_AVAILABLE, "no_such_section_module does not exist yet"),
])
def test_each_way_a_section_ends_is_recorded_with_its_reason(
        module: str, status: str, reason: str, tmp_path: pathlib.Path) -> None:
    outcome = harness.run_section(stand_in(module), tmp_path, quick=True)
    assert (outcome.status, outcome.reason) == (status, reason)


@pytest.mark.usefixtures("section_modules")
def test_a_hanging_section_is_killed_at_its_timeout(tmp_path: pathlib.Path) -> None:
    outcome = harness.run_section(stand_in("sleeping_section"), tmp_path, quick=True, timeout_s=1.5)
    assert outcome.status == TIMEOUT and "after 2 s" in outcome.reason
    assert outcome.wall_s == 1.5


def test_an_unselected_section_reuses_its_earlier_json(tmp_path: pathlib.Path) -> None:
    spec = stand_in("ann_peers")
    assert harness.reuse_section(spec, tmp_path, quick=False).status == NOT_SELECTED
    (tmp_path / "ann_peers.json").write_text(json.dumps({"started": "2026-01-01T00:00:00", "wall_s": 3.0,
                                                         "quick": True}))
    outcome = harness.reuse_section(spec, tmp_path, quick=False)
    assert outcome.status == REUSED and outcome.wall_s == 3.0
    assert outcome.reason == "not selected; figures from 2026-01-01T00:00:00 (a --quick run)"
    assert harness.reuse_section(spec, tmp_path, quick=True).reason.endswith("2026-01-01T00:00:00")


def test_unknown_sections_are_named_in_the_error() -> None:
    with pytest.raises(ValueError, match="unknown section.*bogus; known sections: ncf_table"):
        harness.select_sections(["ann_peers", "bogus"])
    assert [s.name for s in harness.select_sections(["training_speed", "ease"])] == ["ease", "training_speed"]


@pytest.mark.parametrize("flags, message", [
    (["--sections", "ann_peers,nope"], "unknown section(s) nope"),
    (["--timeout", "-3"], "must be > 0"),
])
def test_the_command_line_rejects_bad_arguments(flags: list[str], message: str) -> None:
    completed = subprocess.run([sys.executable, "-m", "bench", *flags], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=60, check=False)
    assert completed.returncode == 2 and message in completed.stderr


def test_quick_report_end_to_end(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib is in the [bench] extra")
    pytest.importorskip("faiss", reason="faiss-cpu is in the [bench] extra")
    pytest.importorskip("annoy", reason="annoy is in the [bench] extra")
    out_dir, report_path = tmp_path / "results", tmp_path / "BENCHMARKS.md"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--sections", "ann_peers,ease", "--out-dir", str(out_dir),
         "--report", str(report_path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=240, check=False)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    summary = json.loads((out_dir / "summary.json").read_text())["sections"]
    assert summary["ann_peers"]["status"] == OK and summary["ease"]["status"] == OK
    assert summary["training_speed"]["status"] == NOT_SELECTED

    machine = json.loads((out_dir / "machine.json").read_text())
    assert machine["usable_cores"] >= 1 and machine["libraries"]["numpy"]

    ann = json.loads((out_dir / "ann_peers.json").read_text())
    assert ann["quick"] is True and ann["command"].startswith("python -m bench.ann_peers")
    points = ann["scales"][0]["points"]
    assert {p["library"] for p in points} >= {"brute-force (numpy)", "scann", "faiss-ivf-flat", "faiss-ivf-pq",
                                               "faiss-hnsw", "annoy"}
    assert all(0.0 <= p["recall"] <= 1.0 and p["batch_qps"] > 0 for p in points)
    assert max(p["recall"] for p in points if p["library"] == "scann") >= 0.95
    assert ann["scales"][0]["export_tuned"]["recall"] >= 0.9

    ease_tables = json.loads((out_dir / "ease.json").read_text())["tables"]
    for table in ease_tables[::2]:
        rows = {row["model"].split(" (")[0]: row for row in table["rows"]}
        assert rows["EASE"]["test_hr@10"] > rows["ItemPop"]["test_hr@10"]

    text = report_path.read_text()
    linked = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", text)
    assert sorted(pathlib.Path(link).name for link in linked) == ["quality.png", "recall_qps.png"]
    assert all((report_path.parent / link).is_file() for link in linked)
    assert "python -m bench --quick --sections ann_peers,ease" in text
    assert "Baseline, exact brute force:" in text and "| [ncf_table](#" in text
