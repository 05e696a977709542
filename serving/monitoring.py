"""Request and load metrics in the Prometheus text format, under TF Serving's metric names.

TF Serving exports `/tensorflow/serving/...` metrics; its Prometheus exporter turns the
slashes into colons, e.g. `:tensorflow:serving:request_count{model_name="ranking",status="OK"}`.
The page is written here rather than by prometheus_client's exposition because that one renames
every counter to `<name>_total` and sorts the labels, which would break queries and dashboards
written against TF Serving. Label values are escaped as the text format requires (backslash,
double quote, line feed), and requests only count under the name of a model the server is
configured with: a request cannot add a label value of its choosing.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections.abc import Callable, Iterable

# Latency buckets in microseconds, as TF Serving's request_latency histogram uses.
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(float(10 * 1.8**i) for i in range(33))
REQUEST_COUNT = ":tensorflow:serving:request_count"
REQUEST_LATENCY = ":tensorflow:serving:request_latency"
LOAD_ATTEMPT_COUNT = ":tensorflow:cc:saved_model:load_attempt_count"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


@dataclasses.dataclass
class _Histogram:
    counts: list[int]
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value
        self.count += 1


def escape_label_value(value: str) -> str:
    """A label value as the Prometheus text format writes it between double quotes."""
    return value.translate(_ESCAPES)


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return ",".join(f'{key}="{escape_label_value(value)}"' for key, value in pairs)


class Metrics:
    """Thread-safe counters and histograms of one server.

    Args:
        model_known: whether a model name is one the server is configured with; requests naming
            any other model are not counted (None counts every name: for tests of one component).
    """

    def __init__(self, model_known: Callable[[str], bool] | None = None) -> None:
        self._model_known = model_known
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str], _Histogram] = {}
        self._loads: dict[tuple[str, str], int] = {}

    def record_request(self, model_name: str, api: str, entrypoint: str, status: str, seconds: float) -> None:
        """Counts one request and its latency, unless it names a model the server does not have.

        Args:
            model_name: the requested model ("" for a request that names none, e.g. MultiInference).
            api: "Predict", "Classify", "Regress", "GetModelMetadata" or "GetModelStatus".
            entrypoint: "GRPC" or "REST".
            status: the canonical status name, e.g. "OK", "INVALID_ARGUMENT".
            seconds: the wall time spent on it.
        """
        if model_name and self._model_known is not None and not self._model_known(model_name):
            return
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
        """The Prometheus text exposition (format 0.0.4) of every metric."""
        with self._lock:
            lines = [f"# TYPE {REQUEST_COUNT} counter"]
            lines += [f"{REQUEST_COUNT}{{{_labels((('model_name', m), ('status', s)))}}} {n}"
                      for (m, s), n in sorted(self._requests.items())]
            lines.append(f"# TYPE {REQUEST_LATENCY} histogram")
            for (model, api, entrypoint), histogram in sorted(self._latency.items()):
                lines += _histogram_lines(REQUEST_LATENCY,
                                          (("model_name", model), ("API", api), ("entrypoint", entrypoint)),
                                          histogram)
            lines.append(f"# TYPE {LOAD_ATTEMPT_COUNT} counter")
            lines += [f"{LOAD_ATTEMPT_COUNT}{{{_labels((('model_path', m), ('status', s)))}}} {n}"
                      for (m, s), n in sorted(self._loads.items())]
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
