"""The report's figures as PNG files (matplotlib's Agg canvas via `Figure`: no display, no pyplot state).

Each function takes plain data (already pulled out of the sections' JSON by bench/report.py), writes one
PNG and returns its path, or returns None when there is nothing to draw.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from collections.abc import Mapping, Sequence

from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, ScalarFormatter

DPI = 110


@dataclasses.dataclass(frozen=True)
class TradeoffPoint:
    """One ANN setting: its library, recall@k against the exact top-k, and batched queries per second."""

    library: str
    recall: float
    qps: float


@dataclasses.dataclass(frozen=True)
class LatencyPoint:
    """recommend() (or any call) at one concurrency level: latency percentiles (ms) and throughput (calls/s)."""

    mode: str
    concurrency: int
    p50_ms: float
    p99_ms: float
    qps: float | None = None


def pareto_front(points: Sequence[TradeoffPoint]) -> list[TradeoffPoint]:
    """The settings no other setting beats on both recall and QPS, by increasing recall."""
    front: list[TradeoffPoint] = []
    for point in sorted(points, key=lambda p: (-p.recall, -p.qps)):
        if not front or point.qps > front[-1].qps:
            front.append(point)
    return front[::-1]


def plot_recall_qps(
    panels: Mapping[str, Sequence[TradeoffPoint]],
    baseline_qps: Mapping[str, float],
    path: pathlib.Path,
    highlights: Mapping[str, Sequence[tuple[str, float, float]]] | None = None,
) -> pathlib.Path | None:
    """Recall against QPS (log scale), one panel per corpus, a Pareto line per library.

    Args:
        panels: panel title -> the points measured on that corpus.
        baseline_qps: panel title -> the exact brute-force QPS (a dashed line).
        highlights: panel title -> (label, recall, qps) points to mark with a star (e.g. the export's setting).
    """
    panels = {title: points for title, points in panels.items() if points}
    if not panels:
        return None
    figure = Figure(figsize=(6.2 * len(panels), 4.6), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, points) in zip(axes, panels.items(), strict=True):
        for library in dict.fromkeys(p.library for p in points):
            mine = [p for p in points if p.library == library]
            front = pareto_front(mine)
            line = ax.plot([p.recall for p in front], [p.qps for p in front], marker="o", label=library)[0]
            ax.scatter([p.recall for p in mine], [p.qps for p in mine], s=12, alpha=0.35, color=line.get_color())
        if title in baseline_qps:
            ax.axhline(baseline_qps[title], color="black", linestyle="--", linewidth=1, label="brute force (exact)")
        for label, recall, qps in (highlights or {}).get(title, ()):
            ax.scatter([recall], [qps], marker="*", s=220, color="gold", edgecolor="black", zorder=5, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("recall@100 (against exact top-100)")
        ax.set_ylabel("queries per second" + ("" if "single query" in title else " (batched)"))
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    return _save(figure, path)


def plot_training_curves(
    histories: Mapping[str, Mapping[str, Sequence[float]]], path: pathlib.Path
) -> pathlib.Path | None:
    """Per model: losses per epoch (left panel) and validation metrics per epoch (right panel).

    Args:
        histories: model name -> metric name -> one value per epoch.
    """
    histories = {name: h for name, h in histories.items() if any(len(v) for v in h.values())}
    if not histories:
        return None
    figure = Figure(figsize=(11, 3.4 * len(histories)), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(histories), 2, squeeze=False)
    for (loss_ax, metric_ax), (model, history) in zip(axes, histories.items(), strict=True):
        for name, values in history.items():
            ax = loss_ax if "loss" in name else metric_ax
            ax.plot(range(1, len(values) + 1), values, marker="o", label=name)
        for ax, kind in ((loss_ax, "loss"), (metric_ax, "validation metric")):
            ax.set_title(f"{model}: {kind} per epoch")
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(True, alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=8)
    return _save(figure, path)


def plot_latency(points: Sequence[LatencyPoint], path: pathlib.Path) -> pathlib.Path | None:
    """Latency p50 (solid) and p99 (dashed) against concurrency, and throughput, per mode."""
    if not points:
        return None
    with_qps = any(p.qps is not None for p in points)
    figure = Figure(figsize=(11 if with_qps else 6, 4.2), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, 2 if with_qps else 1, squeeze=False)[0]
    for mode in dict.fromkeys(p.mode for p in points):
        mine = sorted((p for p in points if p.mode == mode), key=lambda p: p.concurrency)
        levels = [p.concurrency for p in mine]
        line = axes[0].plot(levels, [p.p50_ms for p in mine], marker="o", label=f"{mode} p50")[0]
        axes[0].plot(levels, [p.p99_ms for p in mine], marker="x", linestyle="--", color=line.get_color(),
                     label=f"{mode} p99")
        if with_qps:
            axes[1].plot(levels, [math.nan if p.qps is None else p.qps for p in mine], marker="o", label=mode)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_title("latency against concurrency")
    if with_qps:
        axes[1].set_ylabel("calls per second")
        axes[1].set_title("throughput against concurrency")
    levels = sorted({p.concurrency for p in points})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels)
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("concurrent callers")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    return _save(figure, path)


def plot_quality(
    tables: Mapping[str, Sequence[Mapping[str, float]]], labels: Mapping[str, Sequence[str]], path: pathlib.Path
) -> pathlib.Path | None:
    """Grouped bars: one panel per table, one group per metric, one bar per model.

    Args:
        tables: panel title -> rows of {metric: value}, aligned with `labels[title]`.
        labels: panel title -> the model name of each row.
    """
    tables = {title: rows for title, rows in tables.items() if rows}
    if not tables:
        return None
    figure = Figure(figsize=(max(7.0, 1.4 * max(len(r) for r in tables.values()) + 3), 3.4 * len(tables)),
                    dpi=DPI, layout="constrained")
    axes = figure.subplots(len(tables), 1, squeeze=False)[:, 0]
    for ax, (title, rows) in zip(axes, tables.items(), strict=True):
        metrics = list(dict.fromkeys(metric for row in rows for metric in row))
        width = 0.8 / len(rows)
        for i, (label, row) in enumerate(zip(labels[title], rows, strict=True)):
            offsets = [m + (i - (len(rows) - 1) / 2) * width for m in range(len(metrics))]
            ax.bar(offsets, [row.get(metric, math.nan) for metric in metrics], width, label=label)
        ax.set_xticks(range(len(metrics)), metrics)
        ax.set_title(title)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8, ncols=min(4, len(rows)), loc="best")
    return _save(figure, path)


def plot_bar_panels(panels: Mapping[str, Mapping[str, float]], path: pathlib.Path) -> pathlib.Path | None:
    """One horizontal bar chart per panel: panel title -> {bar label: value}."""
    panels = {title: bars for title, bars in panels.items() if bars}
    if not panels:
        return None
    height = max(len(bars) for bars in panels.values()) * 0.35 + 1.2
    figure = Figure(figsize=(6.0 * len(panels), height), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, bars) in zip(axes, panels.items(), strict=True):
        labels = list(bars)
        ax.barh(range(len(labels)), [bars[label] for label in labels])
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=9)
        ax.grid(True, axis="x", alpha=0.3)
    return _save(figure, path)


def _save(figure: Figure, path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path
