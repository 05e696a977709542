"""BENCHMARKS.md: the figures of one `python -m bench` run, how to reproduce them, and their baselines.

A section's JSON is shown by its own renderer where it has one (ann_peers), else generically: its
`tables` ([{"title", "columns", "rows"}]), then its remaining figures (scalars as a figure/value table,
lists of row objects as tables). Reserved keys: section, command, quick, started, wall_s, machine,
baseline, notes, skipped, skipped_parts, tables.
"""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from bench.figures import number
from bench.harness import OK, REPO_ROOT, REUSED, Outcome

EXPORT_TUNED = "scann (export auto-tuned)"  # bench.ann_peers's label (not imported: it loads ScaNN and Faiss)
RESERVED = frozenset({"section", "command", "quick", "started", "wall_s", "machine", "provenance", "baseline", "notes",
                      "skipped", "skipped_parts", "tables"})
MAX_ROWS = 40
KEY_LIBRARIES = ("tensorflow", "tensorflow-recommenders", "scann", "numpy", "faiss-cpu", "annoy", "implicit")


@dataclasses.dataclass
class ReportContext:
    """What the report says about the run as a whole.

    Attributes:
        command: the `python -m bench ...` command line.
        out_dir: the results folder (JSON, PNG).
        report_path: where BENCHMARKS.md is written (links are relative to it).
        machine: bench.machine.machine_info() of the run.
        plots: plot title -> PNG path.
        started: ISO time the run started.
        wall_s: seconds the whole run took.
        quick: whether this was a --quick run.
    """

    command: str
    out_dir: pathlib.Path
    report_path: pathlib.Path
    machine: dict[str, Any]
    plots: dict[str, pathlib.Path]
    started: str
    wall_s: float
    quick: bool


def fmt(value: Any) -> str:
    """A table cell: floats to 4 significant digits (thousands grouped), None as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10000 else str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v) for v in value) if len(value) <= 8 else f"({len(value)} values)"
    if isinstance(value, dict):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(columns: Sequence[str], rows: Sequence[Mapping[str, Any]], limit: int = MAX_ROWS) -> str:
    """A Markdown table of `rows` (missing cells blank), truncated to `limit` rows with a note."""
    lines = ["| " + " | ".join(fmt(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(fmt(row.get(c)) if c in row else "" for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n({len(rows) - limit} more rows in the JSON)")
    return "\n".join(lines) + "\n"


def flatten(row: Mapping[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Nested objects as dotted keys, up to `depth` levels; deeper values are kept as they are."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and depth > 0:
            flat.update(flatten(value, name + ".", depth - 1))
        else:
            flat[name] = value
    return flat


def generic_body(result: Mapping[str, Any]) -> str:
    """The section's scalar figures as a figure/value table, then its `tables` (or, without any, its row lists).

    A section that lays out its own `tables` shows only those, with its other figures folded away below them.
    """
    explicit = [table for table in result.get("tables") or [] if isinstance(table, dict)]
    parts = [_explicit_table(table) for table in explicit]
    top: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in result.items():
        if key in RESERVED:
            continue
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            if not explicit:
                rows = [flatten(v) for v in value]
                columns = [c for c in dict.fromkeys(c for r in rows for c in r) if _is_cell(rows, c)]
                parts.append(f"**{key}**\n\n" + markdown_table(columns, rows))
        elif isinstance(value, dict):
            nested.update({k: v for k, v in flatten(value, key + ".").items() if _is_scalar(v)})
        elif _is_scalar(value) or isinstance(value, list):
            top[key] = value
    if not explicit:
        top.update(nested)
        nested = {}
    if top:
        parts.insert(0, markdown_table(["figure", "value"], [{"figure": k, "value": v} for k, v in top.items()]))
    if nested:
        parts.append(f"<details><summary>Other figures ({len(nested)})</summary>\n\n"
                     + markdown_table(["figure", "value"], [{"figure": k, "value": v} for k, v in nested.items()],
                                      limit=len(nested))
                     + "\n</details>\n")
    return "\n".join(parts)


def _explicit_table(table: Mapping[str, Any]) -> str:
    rows = [flatten(r) for r in table.get("rows", []) if isinstance(r, dict)]
    columns = table.get("columns") or list(dict.fromkeys(c for r in rows for c in r))
    title = f"**{table['title']}**\n\n" if table.get("title") else ""
    note = f"\n{table['note']}\n" if table.get("note") else ""
    return title + markdown_table(columns, rows) + note


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _is_cell(rows: Sequence[Mapping[str, Any]], column: str) -> bool:
    return all(_is_scalar(r.get(column)) or isinstance(r.get(column), list) for r in rows)


def ann_peers_body(result: Mapping[str, Any]) -> str:
    """Per corpus: the fastest setting of each library at each recall target, against brute force."""
    parts = []
    for scale in result.get("scales", []):
        exact = next(p for p in scale["points"] if p["library"].startswith("brute-force"))
        parts.append(
            f"### {scale['num_items']:,} items, dim {scale['dim']}, top-{scale['k']}, "
            f"{scale['num_queries']:,} queries\n\n"
            + (f"Corpus: {scale['corpus']}.\n\n" if scale.get("corpus") else "")
            + f"Baseline, exact brute force: **{fmt(exact['batch_qps'])} QPS** batched, "
            f"{fmt(exact['latency_ms_p50'])} ms p50 single-query. Best batched QPS of each library at a recall "
            "target (speed-up over brute force in the same run), and the best single-query rate (one query per "
            "call, one thread, 1000 / p50 ms):\n"
        )
        rows = []
        for row in scale["best_at_recall"]:
            cells = {"library": row["library"]}
            for key in [k for k in row if k.startswith("qps@")]:
                target = key.removeprefix("qps@")
                qps, speedup = row[key], row[f"speedup@{target}"]
                cells[f"recall ≥ {target}"] = "–" if qps is None else f"{fmt(qps)} ({speedup:g}×)"
                cells[f"p50 ms @{target}"] = row.get(f"p50_ms@{target}")
                if f"single_qps@{target}" in row:
                    cells[f"single-query QPS @{target}"] = row[f"single_qps@{target}"]
            rows.append(cells)
        columns = list(dict.fromkeys(c for r in rows for c in r))
        parts.append(markdown_table(columns, rows))
        tuned = scale.get("export_tuned")
        if tuned:
            parts.append(_tuned_line(tuned))
        builds = ", ".join(f"{name} {seconds:g} s" for name, seconds in scale["build_s"].items() if seconds)
        parts.append(f"Build times: {builds}.\n")
        points = [{"library": p["library"], **p["params"], "recall@100": p["recall"], "batch QPS": p["batch_qps"],
                   "p50 ms": p["latency_ms_p50"], "p99 ms": p["latency_ms_p99"]} for p in scale["points"]]
        columns = list(dict.fromkeys(c for r in points for c in r))
        parts.append(f"<details><summary>All {len(points)} settings</summary>\n\n"
                     + markdown_table(columns, points, limit=len(points)) + "\n</details>\n")
    return "\n".join(parts)


def _tuned_line(tuned: Mapping[str, Any]) -> str:
    if tuned.get("skipped"):
        return f"Export auto-tuning: not measured ({tuned['skipped']}).\n"
    same = tuned.get("sweep_same_params")
    sweep = ("" if not same else f" The sweep's point at the same parameters: recall@100 {fmt(same.get('recall'))}, "
             f"{fmt(same.get('batch_qps'))} QPS batched, {fmt(same.get('latency_ms_p50'))} ms p50.")
    return (f"The export's auto-tuned ScaNN setting (`trainer.retrieval.scann_tuning.tune_scann`, target recall "
            f"{fmt(tuned.get('target_recall'))}; the row `{EXPORT_TUNED}` above, the star in the plot): "
            f"{fmt(tuned.get('params'))} → recall@100 {fmt(tuned.get('recall'))}, "
            f"{fmt(tuned.get('batch_qps'))} QPS batched, {fmt(tuned.get('latency_ms_p50'))} ms p50 "
            f"(tuning took {fmt(tuned.get('tune_s'))} s).{sweep}\n")


RENDERERS: dict[str, Callable[[Mapping[str, Any]], str]] = {"ann_peers": ann_peers_body}


def render_section(outcome: Outcome, context: ReportContext) -> str:
    """One section: title, status, command, baseline, notes, figures."""
    spec, result = outcome.spec, outcome.result or {}
    lines = [f"## {spec.title}\n", f"Section `{spec.name}`: **{outcome.status}**"
             + (f" — {outcome.reason}" if outcome.reason else "")
             + (f" ({fmt(outcome.wall_s)} s)" if outcome.wall_s is not None else "") + "\n"]
    if outcome.stale:
        lines.append(f"**Stale** — {outcome.stale.removeprefix('stale: ')}: these figures measured older code; "
                     f"rerun with `python -m bench --sections {spec.name}`.\n")
    if result.get("started"):
        lines.append(f"Measured {result['started']} on commit `{outcome.commit or 'unknown'}` "
                     f"(code hash `{(result.get('provenance') or {}).get('code_hash', 'none')}`), "
                     f"wall time {fmt(result.get('wall_s'))} s.\n")
    if result.get("command"):
        lines.append(f"Command: `{result['command']}`\n")
    if outcome.log_path is not None and outcome.status not in (OK, REUSED):
        lines.append(f"Log (local, not committed): [{outcome.log_path.name}]({_link(outcome.log_path, context)})\n")
    if result.get("baseline"):
        lines.append(f"Baseline (same run): {fmt(result['baseline'])}\n")
    for note in _as_list(result.get("notes")):
        lines.append(f"- {note}")
    skipped_parts = result.get("skipped_parts") or {}
    if isinstance(skipped_parts, dict):
        skipped_parts = [f"{part} — {reason}" for part, reason in skipped_parts.items()]
    for part in _as_list(skipped_parts):
        lines.append(f"- not measured: {part}")
    if outcome.status in (OK, REUSED) and result:
        lines.append("\n" + RENDERERS.get(spec.name, generic_body)(result))
    return "\n".join(lines) + "\n"


def render_report(outcomes: Sequence[Outcome], context: ReportContext) -> str:
    """The whole BENCHMARKS.md."""
    quick_note = " (quick mode: small sizes, figures only indicative)" if context.quick else ""
    header = [
        "# Benchmarks\n",
        ("Generated by the benchmark harness. Each section shows the commit, date and wall time of the run its "
         "figures come from, and is marked **stale** when trainer/, serving/, recsys_common/ or bench/ changed since "
         "(`python -m bench --check` lists stale sections; `python -m bench` reruns them). Every figure can be "
         "reproduced with the command shown (each section also runs alone as "
         "`python -m bench.<section> --out FILE.json`).\n"),
        f"- Command: `{context.command}`{quick_note}",
        (f"- Started {context.started}, took {fmt(context.wall_s)} s; all sections shown took "
         f"{fmt(sum(o.wall_s or 0.0 for o in outcomes))} s together. Results (JSON per section, machine.json, "
         f"PNG plots): [{_shown(context.out_dir)}]({_link(context.out_dir, context)})"),
        f"- Machine: {_machine_line(context.machine)}",
        ("- Timings are medians over repeats on a machine that may be shared (see the load average); compare "
         "figures against the baseline measured in the same run rather than across runs.\n"),
        _summary_table(outcomes),
    ]
    if context.plots:
        header.append("## Plots\n")
        for title, path in context.plots.items():
            header.append(f"**{title}** ([{path.name}]({_link(path, context)}))\n\n"
                          f"![{title}]({_link(path, context)})\n")
    return "\n".join(header + [render_section(outcome, context) for outcome in outcomes])


def write_report(outcomes: Sequence[Outcome], context: ReportContext) -> pathlib.Path:
    context.report_path.parent.mkdir(parents=True, exist_ok=True)
    context.report_path.write_text(render_report(outcomes, context))
    return context.report_path


def _summary_table(outcomes: Sequence[Outcome]) -> str:
    rows = [{"section": f"[{o.spec.name}](#{_anchor(o.spec.title)})", "status": o.status,
             "figures": "**stale**" if o.stale else ("fresh" if (o.result or {}).get("provenance") else None),
             "commit": o.commit, "measured": (o.result or {}).get("started"), "wall time (s)": o.wall_s,
             "load at start": number(((o.result or {}).get("machine") or {}).get("load_average_1m")),
             "baseline": (o.result or {}).get("baseline"), "note": o.reason} for o in outcomes]
    return markdown_table(["section", "status", "figures", "commit", "measured", "wall time (s)", "load at start",
                           "baseline", "note"], rows)


def _machine_line(machine: Mapping[str, Any]) -> str:
    libraries = machine.get("libraries", {})
    versions = ", ".join(f"{name} {libraries[name]}" for name in KEY_LIBRARIES if libraries.get(name))
    load = fmt(number(machine.get("load_average_1m")))
    return (f"{machine.get('cpu_model')}{_generation(machine.get('cpu_generation'))}, "
            f"{machine.get('usable_cores')} usable cores, "
            f"{machine.get('ram_gib')} GiB RAM, load average {load} at start; Python {machine.get('python')}; "
            f"{versions}")


def _generation(generation: Mapping[str, Any] | None) -> str:
    """The CPU's generation as the machine line shows it, e.g. " (family 25, model 17; avx2, avx512f)", from
    `bench.machine.cpu_generation`; "" where the results predate it or the OS does not say."""
    if not generation or generation.get("family") is None:
        return ""
    extensions = ", ".join(generation.get("vector_extensions") or ["no vector extensions"])
    return f" (family {generation['family']}, model {generation.get('model')}; {extensions})"


def _anchor(title: str) -> str:
    kept = "".join(c for c in title.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")


def _shown(path: pathlib.Path) -> str:
    """A path as the reader should see it: relative to the repository when inside it."""
    return path.relative_to(REPO_ROOT).as_posix() if path.is_relative_to(REPO_ROOT) else str(path)


def _link(path: pathlib.Path, context: ReportContext) -> str:
    return pathlib.Path(os.path.relpath(path, context.report_path.parent)).as_posix()


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]
