"""`python -m bench`: run the benchmark sections, render the plots, write BENCHMARKS.md.

    python -m bench                                  # every section whose figures are missing or stale
    python -m bench --all                            # every section, fresh or not
    python -m bench --check                          # run nothing: list stale or missing sections (exit 1 if any)
    python -m bench --quick                          # small sizes (a smoke run, not for figures)
    python -m bench --sections ann_peers,training_speed --out-dir /tmp/bench

Results go to bench/results/<YYYY-MM-DD>/ (quick: <YYYY-MM-DD>-quick/): one JSON per section, machine.json,
summary.json, the PNG plots, and raw/<section>.log. BENCHMARKS.md at the repository root shows the latest
full report; a --quick run writes its report into its results folder unless --report is given.

Every section's JSON records the commit, whether the tree was dirty, and a hash of the code it measures
(bench.provenance). A section is stale when that code has changed since it ran. Without --sections or
--all, fresh sections are reused (from the results folder, or copied from the latest earlier one when the
folder is the default) and the others rerun; with --sections, only those run and the others are reused, the
stale ones marked so in the report.

Exit status: 0 when the report was written and no section that ran failed or timed out (--check: no section
is stale or missing), 1 otherwise (the report is written either way), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shlex
import shutil
import sys
import time
from collections.abc import Sequence

from bench.figures import render_plots
from bench.harness import (
    FAILED,
    REPO_ROOT,
    REUSED,
    SECTION_NAMES,
    SECTIONS,
    TIMEOUT,
    Outcome,
    mark_stale,
    needs_run,
    reuse_section,
    run_section,
    select_sections,
)
from bench.machine import machine_info
from bench.provenance import code_hash
from bench.report import ReportContext, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--sections", type=_section_list, default=None,
                        help=f"comma-separated sections to run (default: all of {', '.join(SECTION_NAMES)})")
    parser.add_argument("--quick", action="store_true", help="small sizes: the whole report in a few minutes")
    parser.add_argument("--out-dir", type=pathlib.Path, default=None,
                        help="results folder (default bench/results/<YYYY-MM-DD>[-quick]/)")
    parser.add_argument("--report", type=pathlib.Path, default=None,
                        help="the Markdown report (default BENCHMARKS.md; --quick: <out-dir>/BENCHMARKS.md)")
    parser.add_argument("--timeout", type=_positive_seconds, default=None,
                        help="per-section timeout in seconds (default: each section's own)")
    parser.add_argument("--all", action="store_true", help="rerun every section, fresh figures or not")
    parser.add_argument("--check", action="store_true",
                        help="run nothing: list the sections whose figures are stale or missing; exit 1 if any")
    parser.add_argument("--render-only", action="store_true",
                        help="run no section: rebuild the plots and the report from the results folder")
    return parser


def _section_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        select_sections(names)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return names


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text!r}")
    return value


def default_out_dir(quick: bool) -> pathlib.Path:
    return REPO_ROOT / "bench" / "results" / (datetime.date.today().isoformat() + ("-quick" if quick else ""))


def latest_results_dir(quick: bool, other_than: pathlib.Path | None = None) -> pathlib.Path | None:
    """The newest dated results folder of the same mode, other than `other_than` (None when there is none)."""
    suffix = "-quick" if quick else ""
    folders = [p for p in (REPO_ROOT / "bench" / "results").glob(f"????-??-??{suffix}")
               if p.is_dir() and (other_than is None or p.resolve() != other_than.resolve())]
    return max(folders, default=None)


def seed_from(earlier: pathlib.Path | None, out_dir: pathlib.Path) -> list[str]:
    """Copies section JSONs that `out_dir` lacks from `earlier` (their staleness is judged afterwards)."""
    copied: list[str] = []
    if earlier is None:
        return copied
    for name in SECTION_NAMES:
        source, target = earlier / f"{name}.json", out_dir / f"{name}.json"
        if source.is_file() and not target.exists():
            shutil.copy2(source, target)
            copied.append(name)
    return copied


def existing_outcomes(out_dir: pathlib.Path, quick: bool, current_hash: str) -> list[Outcome]:
    """Every section as the results folder holds it, each marked stale or not."""
    return mark_stale([reuse_section(spec, out_dir, quick) for spec in SECTIONS], current_hash)


def stale_sections(out_dir: pathlib.Path, quick: bool, current_hash: str) -> list[str]:
    """Lines naming each section whose figures are stale, missing or from the other mode (empty: all fresh)."""
    lines = []
    for outcome in existing_outcomes(out_dir, quick, current_hash):
        if needs_run(outcome, quick):
            why = outcome.stale or ("from the other mode" if outcome.status == REUSED else
                                    "no figures" if outcome.result is None else outcome.reason)
            lines.append(f"{outcome.spec.name}: {why}")
    return lines


def sections_to_run(names: Sequence[str] | None, rerun_all: bool, out_dir: pathlib.Path, quick: bool,
                    current_hash: str) -> list[str]:
    """The names given, or every section (--all), or those whose figures are missing or stale (the default)."""
    if names is not None:
        return list(names)
    if rerun_all:
        return list(SECTION_NAMES)
    return [o.spec.name for o in existing_outcomes(out_dir, quick, current_hash) if needs_run(o, quick)]


def run_sections(names: Sequence[str] | None, out_dir: pathlib.Path, quick: bool,
                 timeout_s: float | None) -> list[Outcome]:
    """Runs the selected sections one after the other; the others are reused from `out_dir` if present."""
    selected = {spec.name for spec in select_sections(list(names) if names is not None else None)}
    outcomes = []
    for spec in SECTIONS:
        if spec.name not in selected:
            outcomes.append(reuse_section(spec, out_dir, quick))
            continue
        print(f"[bench] {spec.name} ...", flush=True)
        outcome = run_section(spec, out_dir, quick, timeout_s)
        wall = f" in {outcome.wall_s} s" if outcome.wall_s is not None else ""
        print(f"[bench] {spec.name}: {outcome.status}{wall}" + (f" ({outcome.reason})" if outcome.reason else ""),
              flush=True)
        outcomes.append(outcome)
    return outcomes


def write_summary(outcomes: Sequence[Outcome], out_dir: pathlib.Path, command: str, wall_s: float) -> None:
    summary = {"command": command, "wall_s": round(wall_s, 1),
               "sections": {o.spec.name: {"status": o.status, "reason": o.reason, "wall_s": o.wall_s,
                                          "stale": o.stale, "commit": o.commit,
                                          "started": (o.result or {}).get("started")}
                            for o in outcomes}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    out_dir = (args.out_dir or default_out_dir(args.quick)).resolve()
    report_path = (args.report or (out_dir / "BENCHMARKS.md" if args.quick else REPO_ROOT / "BENCHMARKS.md")).resolve()
    current_hash = code_hash()
    if args.check:
        out_dir = args.out_dir or latest_results_dir(args.quick) or out_dir
        lines = stale_sections(out_dir, args.quick, current_hash)
        print("\n".join(lines) if lines else f"[bench] every section in {out_dir} is fresh (code {current_hash})")
        return 1 if lines else 0
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.out_dir is None:
        seed_from(latest_results_dir(args.quick, out_dir), out_dir)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    machine = machine_info()
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    names = [] if args.render_only else sections_to_run(args.sections, args.all, out_dir, args.quick, current_hash)
    outcomes = mark_stale(run_sections(names, out_dir, args.quick, args.timeout), code_hash())
    results = {o.spec.name: o.result for o in outcomes if o.result is not None and not o.result.get("skipped")}
    plots = render_plots(results, out_dir)
    wall_s = time.perf_counter() - start
    write_summary(outcomes, out_dir, command, wall_s)
    context = ReportContext(command, out_dir, report_path, machine, plots, started, wall_s, args.quick)
    print(f"[bench] report: {write_report(outcomes, context)}; results: {out_dir}")
    return 1 if any(o.status in (FAILED, TIMEOUT) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
