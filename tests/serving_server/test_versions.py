"""Versions on a live server: hot swap under load, a broken version, version policies, labels, config reload."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_test_models import grpc_stubs, model_config_text, predict_request, publish, publish_affine
from server_test_models import write_broken_version as broken

from serving.testing import ServerProcess, running_server

if TYPE_CHECKING:
    from typing import Self

HAMMER_THREADS = 4


@pytest.fixture(scope="module")
def versions_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    """A server of `swap` (latest version), `pinned` (versions 1 and 2, labelled) and `late` (no folder yet).

    Module-scoped to start one server: the tests below run in file order and only add to its state
    (the config reload, which removes `pinned`, comes last)."""
    tmp_path = tmp_path_factory.mktemp("versions")
    for version in (1, 2):
        publish_affine(tmp_path / "pinned", version, float(version * 10))
    publish_affine(tmp_path / "swap", 1, 1.0)
    config = tmp_path / "models.config"
    config.write_text(model_config_text(
        {"swap": tmp_path / "swap", "pinned": tmp_path / "pinned", "late": tmp_path / "late"},
        {"pinned": 'model_version_policy { specific { versions: 1 versions: 2 } } '
                   'version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 }'}))
    with running_server(wait_for=["swap", "pinned"], log_dir=tmp_path / "log", model_config_file=config,
                        model_config_file_poll_wait_seconds=0.5, max_num_load_retries=0) as server:
        yield server, tmp_path


class Hammer:
    """Threads sending Predict to `swap` until stopped, recording (version, x, y) and every failure."""

    def __init__(self, target: str) -> None:
        self.answers: list[tuple[int, float, float]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._channel, self._stub, _ = grpc_stubs(target)
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(HAMMER_THREADS)]

    def __enter__(self) -> Self:
        for thread in self._threads:
            thread.start()
        return self

    def _run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not self._stop.is_set():
            x = np.float32(rng.integers(0, 100))
            try:
                response = self._stub.Predict(predict_request("swap", {"x": np.array([x])}), timeout=10)
            except grpc.RpcError as error:
                self.failures.append(f"{error.code()}: {error.details()}")
                continue
            y = float(tf.make_ndarray(response.outputs["y"])[0])
            self.answers.append((response.model_spec.version.value, float(x), y))

    def count(self) -> int:
        return len(self.answers)

    def wait_for_more(self, extra: int, timeout: float = 30.0) -> None:
        target, deadline = self.count() + extra, time.monotonic() + timeout
        while self.count() < target and time.monotonic() < deadline:
            time.sleep(0.01)

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._channel.close()


@pytest.mark.parametrize(("path", "expected"), [
    ("/v1/models/pinned:predict", 21.0),  # the latest of the specific versions
    ("/v1/models/pinned/versions/1:predict", 11.0),
    ("/v1/models/pinned/labels/stable:predict", 11.0),
    ("/v1/models/pinned/labels/canary:predict", 21.0),
])
def test_specific_policy_and_labels(versions_server: tuple[ServerProcess, Path], path: str, expected: float) -> None:
    server, _ = versions_server
    assert server.post_json(path, {"instances": [1.0]}) == (200, {"predictions": [expected]})


def test_specific_policy_serves_both_versions_and_ignores_others(versions_server: tuple[ServerProcess, Path]) -> None:
    server, root = versions_server
    publish_affine(root / "pinned", 3, 30.0)
    time.sleep(1.0)  # several poll intervals: version 3 is not in the policy, so it must never load
    versions = server.model_versions("pinned")
    assert {v: e["state"] for v, e in versions.items()} == {2: "AVAILABLE", 1: "AVAILABLE"}
    assert server.get_json("/v1/models/pinned/labels/stable")[1]["model_version_status"][0]["version"] == "1"


def test_hot_swap_under_load_fails_no_request_and_a_broken_version_does_not_take_over(
        versions_server: tuple[ServerProcess, Path]) -> None:
    server, root = versions_server
    with Hammer(server.grpc_target) as hammer:
        hammer.wait_for_more(50)
        publish_affine(root / "swap", 2, 2.0)
        server.wait_until(
            "swap", lambda v: v.get(2, {}).get("state") == "AVAILABLE" and v.get(1, {}).get("state") == "END",
            what="version 2 AVAILABLE and version 1 unloaded")
        hammer.wait_for_more(50)
        swapped_at = hammer.count()
        publish(root / "swap", 3, broken)
        status = server.wait_until("swap", lambda v: v.get(3, {}).get("state") == "END", what="version 3 failed")
        hammer.wait_for_more(50)
    assert hammer.failures == []
    versions_seen = [version for version, _, _ in hammer.answers]
    assert {1, 2} <= set(versions_seen)
    assert set(versions_seen[swapped_at:]) == {2}  # after the swap, and despite the broken version 3
    assert all(y == x + version for version, x, y in hammer.answers)  # each answer from the version it names
    assert status[3]["status"]["error_code"] != "OK" and "saved_model.pb" in status[3]["status"]["error_message"]
    assert status[2]["state"] == "AVAILABLE"
    assert server.post_json("/v1/models/swap:predict", {"instances": [1.0]}) == (200, {"predictions": [3.0]})
    # A good version after the broken one is still picked up.
    publish_affine(root / "swap", 4, 4.0)
    server.wait_until_available("swap", version=4)
    assert server.post_json("/v1/models/swap:predict", {"instances": [1.0]}) == (200, {"predictions": [5.0]})


def test_a_model_whose_folder_appears_later_is_served_then(versions_server: tuple[ServerProcess, Path]) -> None:
    server, root = versions_server
    assert server.get_json("/v1/models/late") == (404, {"error": "Could not find any versions of model late"})
    publish_affine(root / "late", 5, 0.5)
    server.wait_until_available("late", version=5, timeout=30)
    assert server.post_json("/v1/models/late:predict", {"inputs": [1.0]}) == (200, {"outputs": [1.5]})


def test_config_file_changes_are_picked_up(versions_server: tuple[ServerProcess, Path]) -> None:
    server, root = versions_server
    publish_affine(root / "added", 7, -1.0)
    config = root / "models.config"
    config.write_text(model_config_text({"swap": root / "swap", "added": root / "added"}))
    server.wait_until_available("added", version=7, timeout=30)
    assert server.post_json("/v1/models/added:predict", {"instances": [1.0]}) == (200, {"predictions": [0.0]})
    server.wait_until("pinned", lambda v: not v, what="pinned removed from the config")
    status, _ = server.post_json("/v1/models/pinned:predict", {"instances": [1.0]})
    assert status == 404

