"""bench.report, bench.figures, bench.plots: what reaches BENCHMARKS.md and the PNGs."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="matplotlib is in the [bench] extra")

from matplotlib.image import imread

from bench import figures, plots, report
from bench.harness import FAILED, NOT_AVAILABLE, OK, SECTIONS, TIMEOUT, Outcome

NCF_SECTION = {
    "section": "ncf_table",
    "command": "python -m bench.ncf_table --out x.json",
    "baseline": "ItemPop",
    "machine": {"cpu_model": "must not be shown as a figure"},
    "dataset": "ml-100k",
    "users": 943,
    "anchors": {"neumf": {"hr@10": 0.73}},
    "tables": [{
        "title": "NCF protocol",
        "columns": ["model", "hr@10", "ndcg@10", "train_seconds"],
        "rows": [
            {"model": "ItemPop", "hr@10": 0.4, "ndcg@10": 0.2, "train_seconds": 0.1},
            {"model": "NeuMF", "hr@10": 0.68, "ndcg@10": 0.41, "train_seconds": 35.0},
        ],
    }, {
        "title": "Selection (a sweep: labels repeat, so it is no bar chart)",
        "rows": [{"model": "mf", "lr": 0.1, "validation_hr@10": 0.3},
                 {"model": "mf", "lr": 0.2, "validation_hr@10": 0.4}],
    }],
    "raw_rows": [{"model": "ignored when tables exist", "hr@10": 0.1}],
}


def section(name: str) -> object:
    return next(spec for spec in SECTIONS if spec.name == name)


@pytest.mark.parametrize("value, text", [
    (None, "–"), (0.123456, "0.1235"), (12345.6, "12,346"), (True, "true"), (50000, "50,000"), (7, "7"),
    ("a|b", "a\\|b"), ([1, 2.5], "1, 2.5"), (list(range(20)), "(20 values)"), ({"a": 1}, "a=1"),
])
def test_cells_are_formatted_for_markdown(value: object, text: str) -> None:
    assert report.fmt(value) == text


def test_markdown_table_truncates_and_says_so() -> None:
    table = report.markdown_table(["a", "b"], [{"a": i, "b": i / 3} for i in range(5)], limit=3)
    lines = table.strip().splitlines()
    assert lines[0] == "| a | b |" and lines[2] == "| 0 | 0 |" and lines[4] == "| 2 | 0.6667 |"
    assert "(2 more rows in the JSON)" in table


def test_generic_body_shows_tables_and_scalars_but_not_machine_or_raw_rows() -> None:
    body = report.generic_body(NCF_SECTION)
    assert "| NeuMF | 0.68 | 0.41 | 35 |" in body
    assert "| users | 943 |" in body and "| dataset | ml-100k |" in body
    assert "must not be shown" not in body and "ignored when tables exist" not in body
    folded = body.split("<details><summary>Other figures (1)</summary>")
    assert len(folded) == 2 and "| anchors.neumf.hr@10 | 0.73 |" in folded[1]


def test_generic_body_renders_row_lists_when_no_tables_are_given() -> None:
    body = report.generic_body({"points": [{"name": "a", "nested": {"x": 1.5}}, {"name": "b", "nested": {"x": 2}}]})
    assert "| name | nested.x |" in body and "| a | 1.5 |" in body


def test_quality_tables_take_labelled_metric_columns_only() -> None:
    tables, labels = figures.quality_tables({"ncf_table": NCF_SECTION})
    assert list(tables) == ["ncf_table: NCF protocol"]
    assert labels["ncf_table: NCF protocol"] == ["ItemPop", "NeuMF"]
    assert tables["ncf_table: NCF protocol"][1] == {"hr@10": 0.68, "ndcg@10": 0.41}


def test_quality_prefers_test_figures_and_skips_selection_tables() -> None:
    section_json = {"tables": [
        {"title": "main", "rows": [{"model": "a", "validation_hr@10": 0.5, "test_hr@10": 0.4},
                                   {"model": "b", "validation_hr@10": 0.6, "test_hr@10": 0.45}]},
        {"title": "selection", "rows": [{"model": "a", "validation_hr@10": 0.5},
                                        {"model": "b", "validation_hr@10": 0.6}]},
    ]}
    tables, _ = figures.quality_tables({"s": section_json})
    assert tables == {"s: main": [{"test_hr@10": 0.4}, {"test_hr@10": 0.45}]}


def test_latency_points_convert_units_and_name_series() -> None:
    client = {"tables": [{"rows": [
        {"items": 100000, "path": "server", "concurrency": 4, "p50_s": 0.002, "p99_ms": 9.0, "throughput_rps": 900.0},
        {"path": "in-process", "concurrency": 1, "p50_us": 500.0, "p99_us": 800.0},
        {"import": "serving.client", "seconds_median": 0.3},
    ]}]}
    points = figures.latency_points(client)
    assert points == [
        plots.LatencyPoint("server, 100,000 items", 4, pytest.approx(2.0), 9.0, 900.0),
        plots.LatencyPoint("in-process", 1, 0.5, 0.8, None),
    ]


def test_training_histories_drop_duplicate_series_and_non_numbers() -> None:
    section_json = {"histories": {"retrieval": {"loss": [3.0, 2.0], "val_recall@100": [0.5, 0.6],
                                                "val_recall": [0.5, 0.6], "note": ["x"]},
                                  "empty": {}}}
    assert figures.training_histories(section_json) == {"retrieval": {"loss": [3.0, 2.0],
                                                                      "val_recall@100": [0.5, 0.6]}}


def test_pareto_front_keeps_only_undominated_settings() -> None:
    points = [plots.TradeoffPoint("s", r, q) for r, q in [(0.5, 100), (0.6, 90), (0.55, 50), (0.9, 95), (1.0, 10)]]
    assert [(p.recall, p.qps) for p in plots.pareto_front(points)] == [(0.5, 100), (0.9, 95), (1.0, 10)]


def png_shape(path: pathlib.Path) -> tuple[int, ...]:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path).shape


def test_every_plot_is_a_png_of_its_panels(tmp_path: pathlib.Path) -> None:
    tradeoff = {"A": [plots.TradeoffPoint("scann", 0.9, 1e4), plots.TradeoffPoint("scann", 0.99, 3e3)],
                "B": [plots.TradeoffPoint("annoy", 0.8, 500.0)]}
    wide = png_shape(plots.plot_recall_qps(tradeoff, {"A": 100.0}, tmp_path / "r.png",
                                           {"A": [("tuned", 0.95, 5e3)]}))
    narrow = png_shape(plots.plot_recall_qps({"A": tradeoff["A"]}, {}, tmp_path / "r1.png"))
    assert wide[1] > 1.8 * narrow[1] and wide[0] == narrow[0]  # two panels side by side
    curves = png_shape(plots.plot_training_curves({"m1": {"loss": [1.0, 0.5]}, "m2": {"val_hr": [0.1, 0.2]}},
                                                  tmp_path / "t.png"))
    assert curves[0] > curves[1] * 0.5
    latency = [plots.LatencyPoint("server", c, c * 1.0, c * 3.0, 100.0 / c) for c in (1, 4, 16)]
    assert png_shape(plots.plot_latency(latency, tmp_path / "l.png"))[1] > 1000
    rows, labels = [{"hr": 0.4}, {"hr": 0.7}], ["pop", "neumf"]
    one = png_shape(plots.plot_quality({"t": rows}, {"t": labels}, tmp_path / "q1.png"))
    two = png_shape(plots.plot_quality({"t": rows, "u": rows}, {"t": labels, "u": labels}, tmp_path / "q2.png"))
    assert two[0] > 1.8 * one[0] and two[1] == one[1]  # one panel per table, stacked


@pytest.mark.parametrize("draw", [
    lambda path: plots.plot_recall_qps({"A": []}, {}, path),
    lambda path: plots.plot_training_curves({"m": {"loss": []}}, path),
    lambda path: plots.plot_latency([], path),
    lambda path: plots.plot_quality({}, {}, path),
])
def test_nothing_to_draw_writes_no_file(draw, tmp_path: pathlib.Path) -> None:
    assert draw(tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_report_lists_every_status_with_reasons_and_relative_links(tmp_path: pathlib.Path) -> None:
    out_dir = tmp_path / "results"
    plot = out_dir / "quality.png"
    log = out_dir / "raw" / "client_latency.log"
    outcomes = [
        Outcome(section("ncf_table"), OK, "", 12.5, NCF_SECTION),
        Outcome(section("ease"), NOT_AVAILABLE, "bench.ease does not exist yet"),
        Outcome(section("client_latency"), FAILED, "exit status 1: RuntimeError: boom", 3.0, log_path=log),
        Outcome(section("training_speed"), TIMEOUT, "still running after 600 s; killed", 600.0),
    ]
    context = report.ReportContext("python -m bench", out_dir, tmp_path / "BENCHMARKS.md",
                                   {"cpu_model": "CPU X", "usable_cores": 2, "libraries": {"numpy": "2.0"}},
                                   {"Quality": plot}, "2026-01-01T00:00:00+00:00", 99.0, False)
    text = report.write_report(outcomes, context).read_text()
    assert "![Quality](results/quality.png)" in text
    assert "[client_latency.log](results/raw/client_latency.log)" in text
    assert ("| [ncf_table](#quality-on-ml-100k-ncf-protocol-and-full-ranking) | ok | – | – | – | 12.5 | – | ItemPop |"
            in text)
    assert "**not available** — bench.ease does not exist yet" in text
    assert "**failed** — exit status 1: RuntimeError: boom" in text
    assert "**timeout** — still running after 600 s; killed" in text
    assert "| NeuMF | 0.68 | 0.41 | 35 |" in text and "CPU X, 2 usable cores" in text
    assert text.count("\n## ") == 1 + len(outcomes)  # the plots heading and one heading per section


@pytest.mark.parametrize(("generation", "shown"), [
    ({"family": "25", "model": "17", "vector_extensions": ["avx2", "avx512f"]},
     "CPU X (family 25, model 17; avx2, avx512f), 2 usable cores"),
    ({"family": "6", "model": "85", "vector_extensions": []}, "CPU X (family 6, model 85; no vector extensions), 2"),
    ({"family": None, "model": None, "vector_extensions": []}, "CPU X, 2 usable cores"),
    (None, "CPU X, 2 usable cores"),
], ids=["avx512", "no-avx", "unknown", "older-results"])
def test_the_machine_line_shows_the_cpu_generation_when_known(tmp_path: pathlib.Path, generation, shown) -> None:
    machine = {"cpu_model": "CPU X", "cpu_generation": generation, "usable_cores": 2, "libraries": {}}
    context = report.ReportContext("python -m bench", tmp_path, tmp_path / "BENCHMARKS.md", machine, {},
                                   "2026-01-01T00:00:00+00:00", 1.0, False)
    assert shown in report.write_report([], context).read_text()


def test_render_plots_writes_what_the_results_allow(tmp_path: pathlib.Path) -> None:
    rng = np.random.default_rng(0)
    ann = {"scales": [{"num_items": 1000, "dim": 8, "points": [
        {"library": "brute-force (numpy)", "recall": 1.0, "batch_qps": 50.0},
        *({"library": "scann", "recall": float(r), "batch_qps": float(q)}
          for r, q in zip(rng.uniform(0.5, 1, 5), rng.uniform(100, 1000, 5))),
    ], "export_tuned": {"recall": 0.96, "batch_qps": 400.0}}]}
    made = figures.render_plots({"ann_peers": ann, "ncf_table": NCF_SECTION}, tmp_path)
    assert sorted(p.name for p in made.values()) == ["quality.png", "recall_qps.png"]
    assert all(p.is_file() for p in made.values())
