"""bench.provenance: every section records the code it measured, and the report and --check flag stale figures."""

from __future__ import annotations

import hashlib
import json
import pathlib
import subprocess
import sys

import pytest

from bench import harness, provenance
from bench.__main__ import sections_to_run
from bench.cli import SectionResult
from bench.harness import REUSED, SECTION_NAMES, SECTIONS
from bench.report import ReportContext, render_report

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def code_tree(tmp_path: pathlib.Path) -> pathlib.Path:
    """A stand-in repository (not a git checkout): a few .py files under trainer/, serving/ and bench/."""
    root = tmp_path / "repo"
    for name in ("trainer/task.py", "trainer/retrieval/export.py", "serving/server.py", "bench/ann_peers.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\nVALUE = 1\n")
    (root / "bench" / "notes.md").write_text("not code\n")
    return root


def test_code_hash_is_sha256_of_paths_and_contents_of_the_py_files(code_tree: pathlib.Path) -> None:
    expected = hashlib.sha256()
    for name in ("bench/ann_peers.py", "serving/server.py", "trainer/retrieval/export.py", "trainer/task.py"):
        expected.update(name.encode() + b"\0" + (code_tree / name).read_bytes() + b"\0")
    assert provenance.code_hash(code_tree) == expected.hexdigest()[:16]
    before = provenance.code_hash(code_tree)
    (code_tree / "bench" / "notes.md").write_text("edited, but not code\n")
    assert provenance.code_hash(code_tree) == before
    (code_tree / "serving" / "server.py").write_text("VALUE = 2\n")
    assert provenance.code_hash(code_tree) != before


def test_the_repository_hash_covers_its_tracked_python_files() -> None:
    files = provenance.code_files(REPO_ROOT)
    assert pathlib.Path("bench/harness.py") in files and pathlib.Path("serving/server.py") in files
    assert all(path.suffix == ".py" and path.parts[0] in provenance.CODE_DIRS for path in files)
    recorded = provenance.provenance(REPO_ROOT)
    assert len(recorded["commit"]) == 12 and isinstance(recorded["dirty"], bool)


def test_touching_the_code_makes_a_section_stale_in_the_report(code_tree: pathlib.Path,
                                                               tmp_path: pathlib.Path) -> None:
    out_dir = tmp_path / "results"
    result = SectionResult("ann_peers", quick=False, root=code_tree)
    result.payload["figure"] = 1.5
    result.write(out_dir / "ann_peers.json")
    recorded = json.loads((out_dir / "ann_peers.json").read_text())["provenance"]
    assert recorded["code_hash"] == provenance.code_hash(code_tree) and recorded["commit"] is None

    spec = next(s for s in SECTIONS if s.name == "ann_peers")
    fresh = harness.mark_stale([harness.reuse_section(spec, out_dir, quick=False)], provenance.code_hash(code_tree))
    assert fresh[0].status == REUSED and fresh[0].stale is None
    assert not harness.needs_run(fresh[0], quick=False)

    (code_tree / "trainer" / "retrieval" / "export.py").write_text("VALUE = 2  # the export path changed\n")
    outcomes = harness.mark_stale([harness.reuse_section(spec, out_dir, quick=False)], provenance.code_hash(code_tree))
    assert outcomes[0].stale == ("stale: trainer, serving, recsys_common, bench changed since it ran on an unknown "
                                 "commit")
    assert harness.needs_run(outcomes[0], quick=False)
    context = ReportContext("python -m bench", out_dir, tmp_path / "BENCHMARKS.md", {}, {}, "now", 1.0, False)
    report = render_report(outcomes, context)
    assert "| **stale** |" in report
    assert "**Stale** — trainer, serving, recsys_common, bench changed since it ran" in report
    assert "rerun with `python -m bench --sections ann_peers`" in report


def test_figures_without_a_code_hash_are_stale() -> None:
    assert provenance.stale_reason({"started": "2026-11-30"}, "abc") == (
        "stale: recorded no code hash (measured before provenance was tracked)")
    assert provenance.stale_reason({"provenance": {"code_hash": "abc", "commit": "1234", "dirty": True}}, "def") == (
        "stale: trainer, serving, recsys_common, bench changed since it ran on 1234 with uncommitted changes")


def _section_json(out_dir: pathlib.Path, name: str, code_hash: str, quick: bool = False) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    document = {"section": name, "quick": quick, "started": "2026-12-01T00:00:00+00:00", "wall_s": 2.0,
                "provenance": {"commit": "0123456789ab", "dirty": False, "code_hash": code_hash}, "figure": 1}
    (out_dir / f"{name}.json").write_text(json.dumps(document))


def test_the_default_run_reruns_stale_missing_and_other_mode_sections_only(tmp_path: pathlib.Path) -> None:
    _section_json(tmp_path, "ease", "current")
    _section_json(tmp_path, "ann_peers", "older")
    _section_json(tmp_path, "two_stage", "current", quick=True)
    to_run = sections_to_run(None, False, tmp_path, quick=False, current_hash="current")
    assert to_run == [name for name in SECTION_NAMES if name != "ease"]
    assert sections_to_run(None, True, tmp_path, quick=False, current_hash="current") == list(SECTION_NAMES)
    assert sections_to_run(["ease"], False, tmp_path, quick=False, current_hash="current") == ["ease"]


def test_check_lists_stale_sections_and_fails(tmp_path: pathlib.Path) -> None:
    for name in SECTION_NAMES:
        _section_json(tmp_path, name, "0000000000000000")
    (tmp_path / "ease.json").unlink()
    completed = subprocess.run([sys.executable, "-m", "bench", "--check", "--out-dir", str(tmp_path)], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=60, check=False)
    assert completed.returncode == 1, completed.stdout + completed.stderr
    lines = completed.stdout.splitlines()
    assert len(lines) == len(SECTION_NAMES)
    assert "client_latency: stale: trainer, serving, recsys_common, bench changed since it ran on 0123456789ab" in lines
    assert "ease: no figures" in lines


def test_only_changes_to_the_measured_code_make_a_checkout_dirty(code_tree: pathlib.Path) -> None:
    import subprocess

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=code_tree, check=True,
                       capture_output=True)

    (code_tree / "bench" / "results").mkdir()
    (code_tree / "bench" / "results" / "machine.json").write_text("{}\n")
    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "code and results")
    (code_tree / "bench" / "results" / "machine.json").write_text('{"cores": 2}\n')  # what the harness rewrites
    assert provenance.provenance(code_tree)["dirty"] is False
    (code_tree / "trainer" / "task.py").write_text("VALUE = 2\n")
    assert provenance.provenance(code_tree)["dirty"] is True
