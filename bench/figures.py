"""Pulls the plotted figures out of the sections' JSON.

The sections are written by different people, so besides the known layouts (ann_peers, training_speed)
this looks for the shapes a results table naturally has: a list of row objects with a label column
("model", "name", ...) and metric columns (HR@10, NDCG@10, recall, ...), or rows with a "concurrency"
column and latency percentiles.
"""

from __future__ import annotations

import math
import pathlib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from bench.plots import (
    LatencyPoint,
    TradeoffPoint,
    plot_bar_panels,
    plot_latency,
    plot_quality,
    plot_recall_qps,
    plot_training_curves,
)

LABEL_KEYS = ("model", "name", "method", "baseline", "variant", "ablation", "config", "mode", "library")
QUALITY_METRIC = re.compile(r"(hr|hit|ndcg|recall|precision|mrr|map|auc|accuracy)", re.IGNORECASE)
NOT_QUALITY = re.compile(r"(_s$|_ms$|seconds|time|qps|latency|count|size|num_|epoch|loss)", re.IGNORECASE)
MAX_QUALITY_PANELS = 6
QUALITY_SECTIONS = ("ncf_table", "ease", "retrieval_quality")
MAX_QUALITY_METRICS = 6


def number(value: Any) -> float | None:
    """A finite float from a JSON value, None for anything else (bools, strings, nulls, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def row_lists(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], list[dict[str, Any]]]]:
    """Every non-empty list of objects in a JSON tree, with the keys leading to it."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "machine":
                yield from row_lists(value, path + (str(key),))
    elif isinstance(node, list) and node:
        if all(isinstance(item, dict) for item in node):
            yield path, node
        for i, item in enumerate(node):
            yield from row_lists(item, path + (str(i),))


def row_label(row: Mapping[str, Any]) -> str | None:
    """The row's name: the first label column holding a string."""
    for key in LABEL_KEYS:
        if isinstance(row.get(key), str):
            return str(row[key])
    return None


def ann_tradeoff(
    ann: Mapping[str, Any],
) -> tuple[dict[str, list[TradeoffPoint]], dict[str, float], dict[str, list[tuple[str, float, float]]]]:
    """The recall/QPS panels of bench.ann_peers: points, the brute-force QPS and the export's tuned point."""
    panels: dict[str, list[TradeoffPoint]] = {}
    baselines: dict[str, float] = {}
    highlights: dict[str, list[tuple[str, float, float]]] = {}
    for scale in ann.get("scales", []):
        title = f"{scale['num_items']:,} items, dim {scale['dim']}"
        exact = [p for p in scale["points"] if p["library"].startswith("brute-force")]
        panels[title] = [TradeoffPoint(p["library"], p["recall"], p["batch_qps"])
                         for p in scale["points"] if p not in exact]
        if exact:
            baselines[title] = exact[0]["batch_qps"]
        tuned = scale.get("export_tuned")
        if tuned and number(tuned.get("recall")) is not None and number(tuned.get("batch_qps")) is not None:
            highlights[title] = [(tuned.get("label", "export auto-tuned"), tuned["recall"], tuned["batch_qps"])]
        single = f"{title}, single query (1000 / p50 ms)"
        panels[single] = [TradeoffPoint(p["library"], p["recall"], 1000 / p["latency_ms_p50"])
                          for p in scale["points"] if p not in exact and number(p.get("latency_ms_p50"))]
        if exact and number(exact[0].get("latency_ms_p50")):
            baselines[single] = 1000 / exact[0]["latency_ms_p50"]
        if tuned and number(tuned.get("recall")) is not None and number(tuned.get("latency_ms_p50")):
            highlights[single] = [(tuned.get("label", "export auto-tuned"), tuned["recall"],
                                   1000 / tuned["latency_ms_p50"])]
    return panels, baselines, highlights


def training_histories(section: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Per-epoch histories: `histories` {model: {metric: [per epoch]}} of bench.training_speed."""
    histories: dict[str, dict[str, list[float]]] = {}
    for model, history in (section.get("histories") or {}).items():
        if isinstance(history, dict):
            series = {name: [float(v) for v in values] for name, values in history.items()
                      if isinstance(values, list) and values and all(number(v) is not None for v in values)}
            distinct = {name: values for i, (name, values) in enumerate(series.items())
                        if values not in list(series.values())[:i]}
            if distinct:
                histories[str(model)] = distinct
    return histories


def latency_points(section: Mapping[str, Any]) -> list[LatencyPoint]:
    """Rows with a concurrency level and p50/p99 latencies, wherever they are in the JSON."""
    points = []
    for title, rows in _titled_row_lists("", section):
        for row in rows:
            concurrency = number(row.get("concurrency"))
            p50, p99 = _latency_ms(row, "p50"), _latency_ms(row, "p99")
            if concurrency is None or p50 is None or p99 is None:
                continue
            mode = row_label(row) or (str(row["path"]) if isinstance(row.get("path"), str) else title.strip(": "))
            if number(row.get("items")) is not None:
                mode = f"{mode}, {int(row['items']):,} items"
            qps = next((number(v) for k, v in row.items() if re.search(r"qps|throughput|per_s", k)), None)
            points.append(LatencyPoint(mode, int(concurrency), p50, p99, qps))
    return points


def _latency_ms(row: Mapping[str, Any], percentile: str) -> float | None:
    for key, value in row.items():
        if percentile not in key or number(value) is None:
            continue
        if "ms" in key:
            return float(value)
        if "us" in key:
            return float(value) / 1000
        if key.endswith("_s") or "second" in key:
            return float(value) * 1000
    return None


def quality_tables(
    sections: Mapping[str, Mapping[str, Any]],
) -> tuple[dict[str, list[dict[str, float]]], dict[str, list[str]]]:
    """Quality tables for the bar chart: labelled rows with metrics in [0, 1], one panel per table found."""
    tables: dict[str, list[dict[str, float]]] = {}
    labels: dict[str, list[str]] = {}
    for name, section in sections.items():
        for title, rows in _titled_row_lists(name, section):
            labelled = [(row_label(row), _quality_metrics(row)) for row in rows]
            kept = [(label, metrics) for label, metrics in labelled if label and metrics]
            distinct = len({label for label, _ in kept}) == len(kept)  # a parameter sweep repeats its labels
            if len(kept) < 2 or not distinct or len(tables) >= MAX_QUALITY_PANELS:
                continue
            tables[title] = [metrics for _, metrics in kept]
            labels[title] = [label for label, _ in kept]
    return tables, labels


def _titled_row_lists(name: str, section: Mapping[str, Any]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A section's explicit `tables` (titled), else every row list in it (titled by its JSON path)."""
    explicit = [t for t in section.get("tables") or [] if isinstance(t, dict) and isinstance(t.get("rows"), list)]
    if explicit:
        for i, table in enumerate(explicit):
            yield f"{name}: {table.get('title') or f'table {i + 1}'}", table["rows"]
        return
    for path, rows in row_lists(section):
        yield f"{name}: {'/'.join(p for p in path if not p.isdigit()) or 'table'}", rows


def _quality_metrics(row: Mapping[str, Any]) -> dict[str, float]:
    """The row's quality metrics in [0, 1]; held-out test figures only (no validation ones) when it has both."""
    metrics = {}
    for key, value in row.items():
        score = number(value)
        if score is not None and 0.0 <= score <= 1.0 and QUALITY_METRIC.search(key) and not NOT_QUALITY.search(key):
            metrics[key] = score
    if any(key.startswith("test") for key in metrics):
        metrics = {key: value for key, value in metrics.items() if not key.startswith("val")}
    elif all(key.startswith("val") for key in metrics):
        return {}  # a model-selection table: the chart compares held-out figures
    return dict(list(metrics.items())[:MAX_QUALITY_METRICS])


YOUTUBE_PANELS = (
    (0, "weighted_per_user_loss", "Weighted per-user loss on held-out slates (lower is better)"),
    (0, "clickbait_share", "Clickbait share of the top 10"),
    (0, "watch_time_per_user", "Planted watch time of the top 10 (s)"),
    (1, "fresh_top_k_share", "Share of the top 10 uploaded in the last 7 days"),
    (1, "recall@50", "Hold-out Recall@50 of the candidate generator"),
)


def youtube_panels(section: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """bench.youtube_paper's median tables as bar panels: panel title -> {model: value}."""
    tables = section.get("tables") or []
    panels: dict[str, dict[str, float]] = {}
    for table_index, figure, title in YOUTUBE_PANELS:
        if table_index >= len(tables):
            continue
        bars = {row["model"]: value for row in tables[table_index]["rows"]
                if (value := number(row.get(figure))) is not None}
        panels[title] = bars
    return panels


def render_plots(results: Mapping[str, Mapping[str, Any]], out_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    """Every plot the results allow, as PNGs in `out_dir`; plot title -> path.

    Args:
        results: section name -> its JSON (sections that did not run are absent).
    """
    plots: dict[str, pathlib.Path | None] = {}
    if "ann_peers" in results:
        panels, baselines, highlights = ann_tradeoff(results["ann_peers"])
        plots["Recall@100 against queries per second (ANN libraries, same embeddings)"] = plot_recall_qps(
            panels, baselines, out_dir / "recall_qps.png", highlights)
    if "training_speed" in results:
        plots["Training curves (loss and validation metrics per epoch)"] = plot_training_curves(
            training_histories(results["training_speed"]), out_dir / "training_curves.png")
    if "client_latency" in results:
        plots["recommend() latency and throughput against concurrency"] = plot_latency(
            latency_points(results["client_latency"]), out_dir / "latency_concurrency.png")
    if "youtube_paper" in results:
        plots["The YouTube paper's experiments (synthetic world, medians over seeds)"] = plot_bar_panels(
            youtube_panels(results["youtube_paper"]), out_dir / "youtube_paper.png")
    quality = {name: results[name] for name in QUALITY_SECTIONS if name in results}
    if quality:
        tables, labels = quality_tables(quality)
        plots["Quality (ranking metrics per model)"] = plot_quality(tables, labels, out_dir / "quality.png")
    return {title: path for title, path in plots.items() if path is not None}
