"""TF Serving's server settings that the exporter writes and the server reads: batching and metrics defaults.

Pure Python: the messages (BatchingParameters, the vendored protos of `serving._protos`, or TF
Serving's own) are passed in, so neither side imports the other to agree on these values.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations only, so 3.10 runs this module too

# TF Serving's default REST path of the Prometheus metrics.
DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"
# The BatchingParameters fields that are wrapped scalars (set or unset, unlike the plain ones).
_WRAPPED_FIELDS = ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads")


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """BatchingParameters with TF Serving's defaults for unset fields."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = max(1, os.cpu_count() or 1)
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False

    @classmethod
    def from_proto(cls, params: Any) -> Self:
        """Reads the set fields of a BatchingParameters message (defaults for the others) and validates them."""
        given = {name: getattr(params, name).value for name in _WRAPPED_FIELDS if params.HasField(name)}
        options = cls(**given, allowed_batch_sizes=tuple(params.allowed_batch_sizes),
                      pad_variable_length_inputs=params.pad_variable_length_inputs)
        options.validate()
        return options

    def to_proto(self, params: Any) -> Any:
        """Sets every field of an empty BatchingParameters message to these options and returns it
        (`from_proto` reads them back equal)."""
        params.allowed_batch_sizes.extend(self.allowed_batch_sizes)
        params.pad_variable_length_inputs = self.pad_variable_length_inputs
        for name in _WRAPPED_FIELDS:
            getattr(params, name).value = getattr(self, name)
        return params

    def validate(self) -> None:
        """Raises ValueError naming the first option out of range."""
        for name in ("max_batch_size", "num_batch_threads", "max_enqueued_batches"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")
        sizes = self.allowed_batch_sizes
        if sizes and (list(sizes) != sorted(set(sizes)) or sizes[-1] != self.max_batch_size or sizes[0] < 1):
            raise ValueError("allowed_batch_sizes must be increasing, positive, and end with max_batch_size "
                             f"({self.max_batch_size}); got {list(sizes)}")
