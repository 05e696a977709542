"""Request and load metrics in the Prometheus text format, under TF Serving's metric names.

TF Serving exports `/tensorflow/serving/...` metrics; its Prometheus exporter turns the
slashes into colons, e.g. `:tensorflow:serving:request_count{model_name="ranking",status="OK"}`.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Iterable

# Latency buckets in microseconds, as TF Serving's request_latency histogram uses.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(float(10 * 1.8**i) for i in range(33))


@dataclasses.dataclass
class _Histogram:
    counts: list[int]
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value
        self.count += 1


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    escaped = (f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
               for key, value in pairs)
    return ",".join(escaped)


class Metrics:
    """Thread-safe counters and histograms of one server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}
        self._loads: dict[tuple[str, str], int] = {}

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Counts one request and its latency.

        Args:
            model_name: the requested model.
            api: "Predict", "Classify", "Regress", "GetModelMetadata" or "GetModelStatus".
            entrypoint: "GRPC" or "REST".
            status: the canonical status name, e.g. "OK", "INVALID_ARGUMENT".
            seconds: the wall time spent on it.
        """
        with self._lock:
            key = (model_name, status)
            self._requests[key] = self._requests.get(key, 0) + 1
            histogram = self._latency.setdefault((model_name, api, entrypoint),
                                                 _Histogram([0] * (len(LATENCY_BUCKETS_US) + 1)))
            histogram.observe(seconds * 1e6)

    def record_load(self, model_path: str, status: str) -> None:
        """Counts one version load attempt of a version directory ("OK" or the error's status name)."""
        with self._lock:
            key = (model_path, status)
            self._loads[key] = self._loads.get(key, 0) + 1

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            lines = ["# TYPE :tensorflow:serving:request_count counter"]
            lines += [f":tensorflow:serving:request_count{{{_labels((('model_name', m), ('status', s)))}}} {n}"
                      for (m, s), n in sorted(self._requests.items())]
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (model, api, entrypoint), histogram in sorted(self._latency.items()):
                lines += _histogram_lines(":tensorflow:serving:request_latency",
                                          (("model_name", model), ("API", api), ("entrypoint", entrypoint)),
                                          histogram)
            lines.append("# TYPE :tensorflow:cc:saved_model:load_attempt_count counter")
            lines += [f":tensorflow:cc:saved_model:load_attempt_count{{{_labels((('model_path', m), ('status', s)))}}}"
                      f" {n}" for (m, s), n in sorted(self._loads.items())]
        return "\n".join(lines) + "\n"


def _histogram_lines(name: str, labels: tuple[tuple[str, str], ...], histogram: _Histogram) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS_US, float("inf")), histogram.counts):
        cumulative += count
        le = "+Inf" if bound == float("inf") else f"{bound:.6g}"
        lines.append(f"{name}_bucket{{{_labels((*labels, ('le', le)))}}} {cumulative}")
    lines.append(f"{name}_sum{{{_labels(labels)}}} {histogram.total:.6g}")
    lines.append(f"{name}_count{{{_labels(labels)}}} {histogram.count}")
    return lines
