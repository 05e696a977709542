"""Runs the benchmark sections as subprocesses, each bounded by a timeout, and records how each ended.

A section is the module `bench.<name>`, run as `python -m bench.<name> --out <dir>/<name>.json [--quick]`.
A failing, hanging or missing section never stops the others: its outcome (ok, skipped, failed, timeout,
not available) and the reason are recorded for the report. A section that cannot measure on this setup
exits 0 and writes `{"skipped": "<reason>"}`; a section that measured only part of what it covers lists the
rest under "skipped_parts". Each outcome with figures is checked against today's code (bench.provenance):
`stale` says why its figures no longer describe the code, if they do not.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

from bench.provenance import stale_reason

OK, SKIPPED, FAILED, TIMEOUT, NOT_AVAILABLE, REUSED, NOT_SELECTED = (
    "ok", "skipped", "failed", "timeout", "not available", "reused", "not selected"
)
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class SectionSpec:
    """A benchmark section and how long it may run (seconds) in each mode.

    Attributes:
        module: the module run with `python -m` (default `bench.<name>`).
    """

    name: str
    title: str
    timeout_s: int
    quick_timeout_s: int
    module: str = ""

    def __post_init__(self) -> None:
        if not self.module:
            object.__setattr__(self, "module", f"bench.{self.name}")

    def command(self, out: pathlib.Path, quick: bool) -> list[str]:
        """The subprocess command (run from the repository root, so `out` is shown relative to it)."""
        shown = out.relative_to(REPO_ROOT) if out.is_relative_to(REPO_ROOT) else out
        return [sys.executable, "-m", self.module, "--out", str(shown)] + (["--quick"] if quick else [])


SECTIONS = (
    SectionSpec("ncf_table", "Quality on ml-100k: NCF protocol and full ranking", 900, 150),
    SectionSpec("ease", "EASE baseline under the NCF protocol", 120, 60),
    SectionSpec("retrieval_quality", "Retrieval quality and ablations", 600, 240),
    SectionSpec("two_stage", "Two-stage: retrieval alone against retrieval + re-ranking", 420, 150),
    SectionSpec("quality", "Quality on ml-100k end to end: exported SavedModels against the peers", 7200, 600),
    SectionSpec("scann_vs_bruteforce", "Retrieval: exported ScaNN against brute force", 2400, 420),
    SectionSpec("ann_peers", "Retrieval: ScaNN against other ANN libraries", 1500, 180),
    SectionSpec("client_latency", "Serving: recommend() latency against concurrency, client import cost", 2400, 420),
    SectionSpec("training_speed", "Training speed and end-to-end task time", 600, 180),
    SectionSpec("large_inputs", "Large inputs: peak memory of streaming preprocessing as the log grows", 420, 150),
    SectionSpec("sharded_index", "Sharded retrieval index: latency and recall against the number of shards", 600, 240),
    SectionSpec("youtube_paper", "The YouTube DNN paper's experiments on the synthetic YouTube world", 1800, 300),
)
SECTION_NAMES = tuple(spec.name for spec in SECTIONS)


@dataclasses.dataclass
class Outcome:
    """How one section ended.

    Attributes:
        status: one of ok, skipped, failed, timeout, not available, reused, not selected.
        reason: why it is not ok (empty when ok).
        wall_s: seconds the subprocess ran (None when it did not run).
        result: the section's JSON (None when it wrote none).
        json_path: where the JSON is.
        log_path: the subprocess's stdout+stderr.
        stale: why the figures no longer describe today's code (None when they do, or there are none).
    """

    spec: SectionSpec
    status: str
    reason: str = ""
    wall_s: float | None = None
    result: dict[str, Any] | None = None
    json_path: pathlib.Path | None = None
    log_path: pathlib.Path | None = None
    stale: str | None = None

    @property
    def commit(self) -> str | None:
        """The commit the figures were measured on (with "+dirty" for uncommitted changes)."""
        recorded = (self.result or {}).get("provenance") or {}
        commit = recorded.get("commit")
        return None if commit is None else commit + ("+dirty" if recorded.get("dirty") else "")


def mark_stale(outcomes: list[Outcome], current_hash: str) -> list[Outcome]:
    """Sets `stale` on every outcome that has figures, comparing its recorded code hash with `current_hash`."""
    for outcome in outcomes:
        has_figures = outcome.result is not None and not outcome.result.get("skipped")
        outcome.stale = stale_reason(outcome.result or {}, current_hash) if has_figures else None
    return outcomes


def needs_run(outcome: Outcome, quick: bool) -> bool:
    """Whether the default `python -m bench` reruns a reused section: no figures, stale ones, or the other mode's."""
    if outcome.status not in (REUSED, SKIPPED) or outcome.result is None:
        return True
    return outcome.stale is not None or bool(outcome.result.get("quick")) != quick


def select_sections(names: list[str] | None) -> list[SectionSpec]:
    """The specs for `names` (all when None), in report order.

    Raises:
        ValueError: a name is not a known section.
    """
    if names is None:
        return list(SECTIONS)
    unknown = sorted(set(names) - set(SECTION_NAMES))
    if unknown:
        raise ValueError(f"unknown section(s) {', '.join(unknown)}; known sections: {', '.join(SECTION_NAMES)}")
    return [spec for spec in SECTIONS if spec.name in names]


def is_available(spec: SectionSpec) -> bool:
    """Whether the section's module exists (other helpers may not have written it yet)."""
    return importlib.util.find_spec(spec.module) is not None


def run_section(spec: SectionSpec, out_dir: pathlib.Path, quick: bool, timeout_s: float | None = None) -> Outcome:
    """Runs one section in a subprocess (its own process group, killed whole on timeout)."""
    if not is_available(spec):
        return Outcome(spec, NOT_AVAILABLE, f"{spec.module} does not exist yet")
    json_path = out_dir / f"{spec.name}.json"
    log_path = out_dir / "raw" / f"{spec.name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.unlink(missing_ok=True)
    limit = timeout_s if timeout_s is not None else (spec.quick_timeout_s if quick else spec.timeout_s)
    start = time.perf_counter()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            spec.command(json_path, quick), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return Outcome(spec, TIMEOUT, f"still running after {limit:.0f} s; killed", round(limit, 1),
                           json_path=None, log_path=log_path)
    wall_s = round(time.perf_counter() - start, 1)
    return _finished(spec, returncode, wall_s, json_path, log_path)


def reuse_section(spec: SectionSpec, out_dir: pathlib.Path, quick: bool) -> Outcome:
    """An unselected section: its earlier JSON in `out_dir` if there is one (the report says so)."""
    json_path = out_dir / f"{spec.name}.json"
    if not json_path.is_file():
        return Outcome(spec, NOT_SELECTED, "not selected, and no earlier figures")
    try:
        result = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        return Outcome(spec, NOT_SELECTED, f"not selected; its earlier {json_path.name} is unreadable: {error}")
    started = result.get("started", "an earlier run")
    status = SKIPPED if result.get("skipped") else REUSED
    mode = "" if bool(result.get("quick")) == quick else (" (a --quick run)" if result.get("quick") else
                                                          " (a full run)")
    reason = result.get("skipped") or f"not selected; figures from {started}{mode}"
    return Outcome(spec, status, str(reason), result.get("wall_s"), result, json_path)


def _finished(
    spec: SectionSpec, returncode: int, wall_s: float, json_path: pathlib.Path, log_path: pathlib.Path
) -> Outcome:
    if returncode != 0:
        return Outcome(spec, FAILED, f"exit status {returncode}: {last_error_line(log_path)}", wall_s,
                       log_path=log_path)
    if not json_path.is_file():
        return Outcome(spec, FAILED, f"exited 0 but wrote no {json_path.name}", wall_s, log_path=log_path)
    try:
        result = json.loads(json_path.read_text())
    except json.JSONDecodeError as error:
        return Outcome(spec, FAILED, f"{json_path.name} is not valid JSON: {error}", wall_s, log_path=log_path)
    if not isinstance(result, dict):
        return Outcome(spec, FAILED, f"{json_path.name} must hold a JSON object", wall_s, log_path=log_path)
    if result.get("skipped"):
        return Outcome(spec, SKIPPED, str(result["skipped"]), wall_s, result, json_path, log_path)
    return Outcome(spec, OK, "", wall_s, result, json_path, log_path)


def last_error_line(log_path: pathlib.Path, limit: int = 300) -> str:
    """The last line of the log that reads like an error (else the last non-empty line), shortened."""
    lines = [line.strip() for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line or "Exception" in line]
    line = (errors or lines or ["(no output)"])[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Ends the section's process group (it may have started servers of its own)."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
