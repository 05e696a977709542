"""Server-side batching: concurrent requests share session runs, each caller gets its own rows back."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from server_test_models import Counter, grpc_stubs, predict_request, save_module

from serving.testing import ServerError, ServerProcess, running_server

MAX_BATCH = 8
CALLERS = 12


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("batching")
    save_module(Counter(), root / "counter" / "1")
    params = root / "batching.config"
    params.write_text(f"max_batch_size {{ value: {MAX_BATCH} }}\nbatch_timeout_micros {{ value: 200000 }}\n"
                      "num_batch_threads { value: 1 }\nmax_enqueued_batches { value: 100 }\n")
    with running_server(wait_for=["counter"], log_dir=root / "log", model_base_path=root / "counter",
                        model_name="counter", enable_batching=True, batching_parameters_file=params) as server:
        yield server


def test_concurrent_requests_are_batched_and_split_back(batching_server: ServerProcess) -> None:
    channel, stub, _ = grpc_stubs(batching_server.grpc_target)
    results: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    errors: list[str] = []
    start = threading.Barrier(CALLERS)

    def call(caller: int) -> None:
        x = np.array([caller, caller + 0.5], np.float32)
        start.wait()
        try:
            response = stub.Predict(predict_request("counter", {"x": x}), timeout=30)
        except grpc.RpcError as error:
            errors.append(error.details())
            return
        results[caller] = (tf.make_ndarray(response.outputs["y"]), tf.make_ndarray(response.outputs["runs"]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    channel.close()
    assert errors == []
    assert sorted(results) == list(range(CALLERS))  # no caller thread died without an answer
    for caller, (y, _) in results.items():
        np.testing.assert_array_equal(y, [2.0 * caller, 2.0 * caller + 1.0])  # its own rows, in order
    runs = {int(r[0]) for _, r in results.values()}
    # 12 callers of 2 rows with batches of at most 8 rows: at least 3 runs, far fewer than 12.
    assert 3 <= len(runs) < CALLERS


def test_a_request_whose_deadline_passes_in_the_queue_never_runs(batching_server: ServerProcess) -> None:
    channel, stub, _ = grpc_stubs(batching_server.grpc_target)
    with channel:
        def runs_so_far() -> int:
            response = stub.Predict(predict_request("counter", {"x": np.array([1.0], np.float32)}), timeout=30)
            return int(tf.make_ndarray(response.outputs["runs"])[0])

        before = runs_so_far()
        with pytest.raises(grpc.RpcError) as caught:  # its batch waits 200 ms for company; the caller, 50 ms
            stub.Predict(predict_request("counter", {"x": np.array([5.0], np.float32)}), timeout=0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(0.5)  # past the batch timeout: a worker has taken (and dropped) it
        assert runs_so_far() == before + 1  # the session ran for the next request only


@pytest.mark.parametrize("rows", [MAX_BATCH + 1, 20])
def test_oversized_batch_is_rejected(batching_server: ServerProcess, rows: int) -> None:
    status, body = batching_server.post_json("/v1/models/counter:predict", {"instances": [1.0] * rows})
    assert status == 400
    assert body == {"error": f"Task size {rows} is larger than maximum input batch size {MAX_BATCH}"}
    assert batching_server.post_json("/v1/models/counter:predict", {"inputs": [3.0]})[1]["outputs"]["y"] == [6.0]


def test_invalid_batching_parameters_stop_the_server_with_a_clear_error(tmp_path: Path) -> None:
    params = tmp_path / "batching.config"
    params.write_text("max_batch_size { value: 8 }\nallowed_batch_sizes: 4\nallowed_batch_sizes: 6\n")
    save_module(Counter(), tmp_path / "counter" / "1")
    with pytest.raises(ServerError, match="allowed_batch_sizes must be increasing, positive, and end with") as caught, \
            running_server(wait_for=["counter"], log_dir=tmp_path / "log", model_base_path=tmp_path / "counter",
                           enable_batching=True, batching_parameters_file=params):
        pass
    assert "exited with 1" in str(caught.value)
