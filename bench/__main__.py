"""`python -m bench`: run the benchmark sections, render the plots, write BENCHMARKS.md.

    python -m bench                                  # everything (each section bounded by its own timeout)
    python -m bench --quick                          # small sizes (a smoke run, not for figures)
    python -m bench --sections ann_peers,training_speed --out-dir /tmp/bench

Results go to bench/results/<YYYY-MM-DD>/ (quick: <YYYY-MM-DD>-quick/): one JSON per section, machine.json,
summary.json, the PNG plots, and raw/<section>.log. BENCHMARKS.md at the repository root shows the latest
full report; a --quick run writes its report into its results folder unless --report is given. Sections
not selected are taken from the results folder when an earlier run left them there (marked "reused").

Exit status: 0 when the report was written and no selected section failed or timed out, 1 otherwise
(the report is written either way), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import shlex
import sys
import time
from collections.abc import Sequence

from bench.figures import render_plots
from bench.harness import (
    FAILED,
    REPO_ROOT,
    SECTION_NAMES,
    SECTIONS,
    TIMEOUT,
    Outcome,
    reuse_section,
    run_section,
    select_sections,
)
from bench.machine import machine_info
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
               "sections": {o.spec.name: {"status": o.status, "reason": o.reason, "wall_s": o.wall_s}
                            for o in outcomes}}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    out_dir = (args.out_dir or default_out_dir(args.quick)).resolve()
    report_path = (args.report or (out_dir / "BENCHMARKS.md" if args.quick else REPO_ROOT / "BENCHMARKS.md")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    start = time.perf_counter()
    machine = machine_info()
    (out_dir / "machine.json").write_text(json.dumps(machine, indent=2) + "\n")
    outcomes = run_sections([] if args.render_only else args.sections, out_dir, args.quick, args.timeout)
    results = {o.spec.name: o.result for o in outcomes if o.result is not None and not o.result.get("skipped")}
    plots = render_plots(results, out_dir)
    wall_s = time.perf_counter() - start
    write_summary(outcomes, out_dir, command, wall_s)
    context = ReportContext(command, out_dir, report_path, machine, plots, started, wall_s, args.quick)
    print(f"[bench] report: {write_report(outcomes, context)}; results: {out_dir}")
    return 1 if any(o.status in (FAILED, TIMEOUT) for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
