"""The metrics page: TF Serving's metric names, label values escaped, histograms, and only configured models."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from serving.monitoring import LATENCY_BUCKETS_US, Metrics, escape_label_value

HOSTILE = 'a"}\n# TYPE injected counter\ninjected 1\n\\'


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of the rendered page, as prometheus_client parses it."""
    parsed: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render()):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def request_count(parsed: dict[Any, float], model: str, status: str) -> float | None:
    # prometheus_client reads a counter's samples as <name>_total
    return parsed.get((":tensorflow:serving:request_count_total", (("model_name", model), ("status", status))))


def test_label_values_are_escaped_and_read_back_exactly() -> None:
    assert escape_label_value('x"\\\ny') == 'x\\"\\\\\\ny'
    metrics = Metrics()  # every name counts: the escaping is what is under test
    metrics.record_request(HOSTILE, "Predict", "REST", "NOT_FOUND", 0.001)
    metrics.record_load(f"/models/{HOSTILE}/1", "OK")
    page = metrics.render()
    assert all(line.startswith(("# TYPE ", ":tensorflow:")) for line in page.splitlines())
    parsed = samples(metrics)
    assert request_count(parsed, HOSTILE, "NOT_FOUND") == 1
    assert parsed[(":tensorflow:cc:saved_model:load_attempt_count_total",
                   (("model_path", f"/models/{HOSTILE}/1"), ("status", "OK")))] == 1
    assert not any(name.startswith("injected") for name, _ in parsed)


def test_requests_for_models_the_server_does_not_have_are_not_counted() -> None:
    metrics = Metrics(model_known={"ranking"}.__contains__)
    for name in ("ranking", HOSTILE, "retrieval", "ranking"):
        metrics.record_request(name, "Predict", "GRPC", "OK", 0.002)
    metrics.record_request("", "MultiInference", "GRPC", "OK", 0.002)  # names no single model
    parsed = samples(metrics)
    assert {dict(labels)["model_name"] for _, labels in parsed} == {"ranking", ""}
    assert request_count(parsed, "ranking", "OK") == 2
    assert "retrieval" not in metrics.render()


def test_tf_serving_names_and_label_order_on_the_page() -> None:
    metrics = Metrics()
    metrics.record_request("ranking", "Predict", "REST", "OK", 0.5)
    page = metrics.render()
    assert '\n:tensorflow:serving:request_count{model_name="ranking",status="OK"} 1\n' in page
    assert ':tensorflow:serving:request_latency_count{model_name="ranking",API="Predict",entrypoint="REST"} 1' in page


@pytest.mark.parametrize("latencies_us", [[5.0, 15.0, 1e6], [10.0, 10.0, 18.0, 4e9]])
def test_latency_histogram_buckets_sum_and_count(latencies_us: list[float]) -> None:
    metrics = Metrics()
    for value in latencies_us:
        metrics.record_request("m", "Predict", "GRPC", "OK", value / 1e6)
    parsed = samples(metrics)
    labels = (("API", "Predict"), ("entrypoint", "GRPC"), ("model_name", "m"))
    name = ":tensorflow:serving:request_latency"
    edges = [10 * 1.8**i for i in range(33)]
    assert len(LATENCY_BUCKETS_US) == len(edges)
    for edge in edges:  # cumulative: observations at or below the edge
        key = (f"{name}_bucket", tuple(sorted((*labels, ("le", f"{edge:.6g}")))))
        assert parsed[key] == sum(value <= edge for value in latencies_us), edge
    assert parsed[(f"{name}_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] == len(latencies_us)
    assert parsed[(f"{name}_count", labels)] == len(latencies_us)
    assert parsed[(f"{name}_sum", labels)] == pytest.approx(sum(latencies_us), rel=1e-5)
