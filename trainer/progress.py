"""Progress bars for the long steps of a run (downloads, training epochs, evaluation, index tuning).

Bars go to stderr and are switched off when stderr is not a terminal, so log files, CI
output and captured subprocess output hold only the log lines; a bar is cleared when its
step ends (the step's result is logged instead).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress_bar(total: int | None, description: str, unit: str = "it", unit_scale: bool = False) -> tqdm:
    """A tqdm bar on stderr, disabled unless stderr is a terminal; cleared when closed."""
    return tqdm(total=total, desc=description, unit=unit, unit_scale=unit_scale, leave=False, disable=None,
                dynamic_ncols=True, file=sys.stderr)


def track(items: Iterable[T], total: int | None, description: str, unit: str = "it") -> Iterator[T]:
    """Yields `items` while a `progress_bar` counts them."""
    with progress_bar(total, description, unit) as bar:
        for item in items:
            yield item
            bar.update(1)


def keras_batch_progress(description: str, steps: int | None, metric: str = "loss") -> Any:
    """A Keras callback showing a `progress_bar` over the batches of one `Model.fit` call, with a running metric.

    Args:
        description: the bar's label, e.g. "retrieval epoch 2/5".
        steps: batches per epoch (None when unknown).
        metric: the key of the batch logs shown next to the bar.
    """
    import tf_keras as keras  # imported here so that the data layer can use the bars without loading Keras

    bar = progress_bar(steps, description, unit="batch")

    def on_batch_end(batch: int, logs: dict[str, Any] | None) -> None:
        if bar.disable:
            return  # reading a log value waits for the step: only worth it when the bar is drawn
        bar.update(1)
        if logs and metric in logs:
            bar.set_postfix({metric: f"{float(logs[metric]):.4g}"}, refresh=False)

    callback = keras.callbacks.LambdaCallback(on_train_batch_end=on_batch_end, on_train_end=lambda logs: bar.close())
    callback._supports_tf_logs = True  # Keras then passes the logs as tensors, without a per-batch sync
    return callback
