"""Progress bars: drawn on a terminal, silent when stderr is captured (logs, CI, subprocess pipes)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from tqdm import tqdm

import trainer  # noqa: F401  (sets the Keras version before TensorFlow loads)
from trainer.progress import keras_batch_progress, track


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def closed_bars(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int, int | None, str]]:
    """(description, count, total, postfix) of every drawn bar `trainer.progress` closes."""
    closed: list[tuple[str, int, int | None, str]] = []

    class RecordingBar(tqdm):
        def close(self) -> None:
            if not self.disable and not any(record[0] == self.desc for record in closed):
                closed.append((self.desc, self.n, self.total, self.postfix or ""))
            super().close()

    monkeypatch.setattr("trainer.progress.tqdm", RecordingBar)
    return closed


@pytest.mark.parametrize("stream, drawn", [(Terminal(), True), (io.StringIO(), False)])
def test_bars_are_drawn_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch, closed_bars: list, stream: io.StringIO,
                                           drawn: bool) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    assert list(track(iter("abc"), 3, "lettering")) == ["a", "b", "c"]
    assert ("lettering" in stream.getvalue() and "0/3" in stream.getvalue()) is drawn
    assert closed_bars == ([("lettering", 3, 3, "")] if drawn else [])


def test_keras_callback_counts_the_batches_of_a_fit_and_shows_the_loss(monkeypatch: pytest.MonkeyPatch,
                                                                        closed_bars: list) -> None:
    import tf_keras as keras

    monkeypatch.setattr("sys.stderr", Terminal())
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(2,))])
    model.compile(optimizer="sgd", loss="mse")
    features, labels = np.ones((10, 2), np.float32), np.zeros((10, 1), np.float32)
    model.fit(features, labels, batch_size=4, epochs=1, verbose=0,
              callbacks=[keras_batch_progress("epoch 1/1", steps=3)])
    [(description, count, total, postfix)] = closed_bars
    assert (description, count, total) == ("epoch 1/1", 3, 3)
    assert postfix.startswith("loss=") and float(postfix.removeprefix("loss=")) >= 0.0


def test_a_bar_that_is_not_drawn_does_not_read_the_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal the callback must not touch the (tensor) logs: reading them would sync every batch."""
    monkeypatch.setattr("sys.stderr", io.StringIO())
    callback = keras_batch_progress("epoch", steps=2)

    class Untouchable(dict):
        def __contains__(self, key: object) -> bool:
            raise AssertionError("the logs were read")

    callback.on_train_batch_end(0, Untouchable(loss=1.0))
    callback.on_train_end({})
