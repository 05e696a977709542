"""The REST listener under load and abuse: many short connections, oversized and slow requests, malformed
JSON, tensors no JSON can carry, and model names written to break the metrics page."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from server_test_models import Slow, grpc_stubs, model_config_text, predict_request, save_module

from serving.model_config import ConfigError
from serving.rest import RestOptions
from serving.server import parse_options
from serving.testing import ServerProcess, running_server

MAX_BYTES = 2**20
TIMEOUT_MS = 3000
THREADS = 2
MAX_ROWS = 100
METRICS_PATH = "/monitoring/prometheus/metrics"
HOSTILE_NAME = 'evil"}\n# TYPE injected counter\ninjected 1\n'
PREDICT = "/v1/models/affine:predict"


class Odd(tf.Module):
    """Signatures whose second input is a DT_VARIANT (serving_default) or a DT_RESOURCE ("resource")."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                  tf.TensorSpec([], tf.variant, name="v")])
    def serve(self, x: tf.Tensor, v: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 2.0 * x}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                  tf.TensorSpec([], tf.resource, name="r")])
    def resource(self, x: tf.Tensor, r: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": 3.0 * x}



@pytest.fixture(scope="module")
def hardened(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small REST limits: 2 threads, a 3 s timeout, a 1 MiB body cap, 100 rows; metrics on."""
    folder = tmp_path_factory.mktemp("hardened")
    odd = Odd()
    tf.saved_model.save(odd, str(folder / "odd" / "1"), signatures={"serving_default": odd.serve,
                                                                    "resource": odd.resource})
    save_module(Slow(), folder / "slow" / "1")
    models = {"affine": model_root / "affine", "odd": folder / "odd", "slow": folder / "slow"}
    (folder / "models.config").write_text(model_config_text(models))
    (folder / "monitoring.config").write_text(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
    with running_server(wait_for=list(models), log_dir=folder, model_config_file=folder / "models.config",
                        monitoring_config_file=folder / "monitoring.config", rest_api_num_threads=THREADS,
                        rest_api_timeout_in_ms=TIMEOUT_MS, rest_api_max_request_bytes=MAX_BYTES,
                        max_request_batch_size=MAX_ROWS) as server:
        yield server


def exchange(server: ServerProcess, data: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Sends raw bytes on a new connection; returns the response's status and body (read until close)."""
    with socket.create_connection(("127.0.0.1", server.rest_port), timeout=timeout) as sock:
        sock.sendall(data)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def post(server: ServerProcess, path: str, body: bytes, timeout: float = 10.0) -> tuple[int, Any]:
    """POST on a new connection (closed after the answer); returns (status, parsed JSON or text)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", "Connection": "close"})
        response = connection.getresponse()
        status, raw = response.status, response.read()
    finally:
        connection.close()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", errors="replace")


def assert_affine_answers(server: ServerProcess) -> None:
    assert post(server, PREDICT, b'{"instances": [1.0, 2.5]}') == (200, {"predictions": [2.0, 3.5]})


def test_rest_flags_are_checked_and_mapped_to_the_listener() -> None:
    options = parse_options(["--rest_api_num_threads=3", "--rest_api_timeout_in_ms=2500",
                             "--rest_api_max_request_bytes=1000"])
    rest = RestOptions.from_flags(options.rest_api_num_threads, options.rest_api_timeout_in_ms,
                                  options.rest_api_max_request_bytes)
    settings = rest.waitress_settings()
    assert (settings["threads"], settings["channel_timeout"], settings["max_request_body_size"]) == (3, 3, 1001)
    assert settings["backlog"] >= 1024
    with pytest.raises(ConfigError, match="--rest_api_timeout_in_ms must be at least 1, got 0"):
        RestOptions.from_flags(1, 0, 1000)
    with pytest.raises(ConfigError, match="--rest_api_max_request_bytes"):
        RestOptions.from_flags(1, 1000, 0)


def test_64_clients_opening_a_connection_per_request_see_no_errors(hardened: ServerProcess) -> None:
    clients, seconds, max_requests = 64, 10.0, 5000  # max_requests bounds each client's loop
    body = b'{"instances": [1.0]}'
    deadline = time.monotonic() + seconds
    answered = [0] * clients
    errors: list[str] = []

    def client(index: int) -> None:
        for _ in range(max_requests):
            if time.monotonic() > deadline:
                return
            try:
                status, answer = post(hardened, PREDICT, body, timeout=30.0)
            except OSError as error:
                errors.append(f"{type(error).__name__}: {error}")
                continue
            if (status, answer) != (200, {"predictions": [2.0]}):
                errors.append(f"{status} {answer}")
                continue
            answered[index] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 60)
    assert not errors, f"{len(errors)} failed requests, e.g. {errors[:5]}"
    assert all(count > 0 for count in answered), answered


def test_a_huge_content_length_gets_413_before_any_body_is_sent(hardened: ServerProcess) -> None:
    started = time.monotonic()
    status, body = exchange(hardened, f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\n"
                                      f"Content-Length: {10**11}\r\n\r\n".encode())
    assert status == 413
    assert b"exceeds max_body" in body
    assert time.monotonic() - started < 5.0
    status, _ = exchange(hardened, f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1e11\r\n\r\n"
                         .encode())
    assert status == 400  # not a number of bytes at all
    assert_affine_answers(hardened)


def _padded(document: bytes, size: int) -> bytes:
    return document[:-1] + b" " * (size - len(document)) + b"}"


def test_the_body_cap_is_exact_and_holds_for_chunked_bodies(hardened: ServerProcess) -> None:
    document = b'{"instances": [1.0, 2.5]}'
    assert post(hardened, PREDICT, _padded(document, MAX_BYTES)) == (200, {"predictions": [2.0, 3.5]})
    # Only what the server reads is sent: bytes it never reads would make its close a reset, losing the 413.
    head = f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\n"
    assert exchange(hardened, f"{head}Content-Length: {MAX_BYTES + 1}\r\n\r\n".encode())[0] == 413
    chunk_size = MAX_BYTES + 1 - len(b"%x\r\n" % (MAX_BYTES - 1))  # the cap counts the chunk framing too
    assert len(b"%x\r\n" % chunk_size) + chunk_size == MAX_BYTES + 1
    status, _ = exchange(hardened, f"{head}Transfer-Encoding: chunked\r\n\r\n".encode()
                         + b"%x\r\n" % chunk_size + b" " * chunk_size)
    assert status == 413


def _is_open(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


def test_slow_senders_hold_no_thread_and_are_cut_off_by_the_timeout(hardened: ServerProcess) -> None:
    slow = []
    started = time.monotonic()
    for _ in range(4 * THREADS):  # more stalled requests than worker threads
        sock = socket.create_connection(("127.0.0.1", hardened.rest_port), timeout=10)
        sock.sendall(f"POST {PREDICT} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{{".encode())
        slow.append(sock)
    try:
        for _ in range(5):
            assert_affine_answers(hardened)
        served_after = time.monotonic() - started
        if served_after < TIMEOUT_MS / 1000:  # else too loaded a machine to tell: the cut-off is still checked
            assert all(_is_open(sock) for sock in slow)
        while any(_is_open(sock) for sock in slow) and time.monotonic() - started < TIMEOUT_MS / 1000 + 10:
            time.sleep(0.2)
        cut_after = time.monotonic() - started
        assert not any(_is_open(sock) for sock in slow), f"still open after {cut_after:.1f} s"
        assert cut_after >= TIMEOUT_MS / 1000
    finally:
        for sock in slow:
            sock.close()
    assert_affine_answers(hardened)


def test_a_run_longer_than_the_rest_timeout_is_cancelled_with_504(hardened: ServerProcess) -> None:
    assert post(hardened, "/v1/models/slow:predict", b'{"instances": [50.0]}') == \
        (200, {"predictions": [50.0]})
    started = time.monotonic()
    status, answer = post(hardened, "/v1/models/slow:predict", b'{"instances": [1e12]}',
                          timeout=60.0)
    elapsed = time.monotonic() - started
    assert status == 504, answer
    assert TIMEOUT_MS / 1000 <= elapsed < TIMEOUT_MS / 1000 + 20
    assert_affine_answers(hardened)


@pytest.mark.parametrize(("path", "document", "where"), [
    (PREDICT, {"instances": [1.0] * (MAX_ROWS + 1)}, "'instances' has 101 rows"),
    (PREDICT, {"inputs": [1.0] * (MAX_ROWS + 1)}, "input 'x' has 101 rows"),
    (PREDICT, {"inputs": {"x": [1.0] * 150_000}}, "input 'x' has 150000 rows"),
    ("/v1/models/affine:regress", {"examples": [{"x": 1.0}] * (MAX_ROWS + 1)}, "'examples' has 101 rows"),
])
def test_more_rows_than_the_batch_cap_get_429_before_conversion(hardened: ServerProcess, path: str,
                                                                document: dict[str, Any], where: str) -> None:
    status, answer = post(hardened, path, json.dumps(document).encode())
    assert (status, answer) == (429, {"error": f"{where}, over this server's limit of {MAX_ROWS} "
                                               "(--max_request_batch_size)"})
    at_cap = post(hardened, PREDICT, json.dumps({"instances": [1.0] * MAX_ROWS}).encode())
    assert at_cap == (200, {"predictions": [2.0] * MAX_ROWS})


def _nested(depth: int, leaf: str = "1.0") -> str:
    return "[" * depth + leaf + "]" * depth


@pytest.mark.parametrize(("path", "body", "message"), [
    (PREDICT, '{"instances": ' + _nested(100_000) + "}", "JSON Parse error: The document is nested too deeply"),
    (PREDICT, '{"inputs": ' + _nested(900) + "}", "JSON lists nested more than 254 deep"),
    (PREDICT, '{"instances": [' + _nested(600) + "]}", "JSON lists nested more than 253 deep"),
    (PREDICT, '{"instances": [' + "1" * 5000 + "]}", "JSON Parse error: Exceeds the limit (4300 digits)"),
    (PREDICT, '{"instances": [' + '{"a":' * 900 + "1" + "}" * 900 + "]}",
     "Failed to process element: 0 of 'instances' list. JSON object: {\"a\":{\"a\":"),
    ("/v1/models/odd:predict", '{"inputs": {"x": [1.0], "v": []}}',
     "Input: v of the signature has dtype DT_VARIANT, which a JSON request cannot carry"),
    ("/v1/models/odd:predict", '{"instances": [{"x": 1.0, "v": 0}]}', "dtype DT_VARIANT"),
    ("/v1/models/odd:predict", '{"signature_name": "resource", "inputs": {"x": [1.0], "r": 0}}',
     "Input: r of the signature has dtype DT_RESOURCE"),
    (f"/v1/models/affine/versions/{2**64}:regress", '{"examples": [{"x": 1.0}]}',
     f"Failed to convert version: {2**64} to numeric."),
])
def test_malformed_requests_get_400_with_a_message(hardened: ServerProcess, path: str, body: str,
                                                   message: str) -> None:
    status, answer = post(hardened, path, body.encode())
    assert status == 400, answer
    assert message in answer["error"]
    assert len(answer["error"]) < 3000  # a quoted value is cut short
    assert_affine_answers(hardened)


def test_a_model_with_unsupported_input_dtypes_still_reports_its_metadata(hardened: ServerProcess) -> None:
    status, metadata = hardened.get_json("/v1/models/odd/metadata")
    assert status == 200
    inputs = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["v"]["dtype"] == "DT_VARIANT"


def _metric_samples(server: ServerProcess) -> list[Any]:
    status, text = server.get_json(METRICS_PATH)
    assert status == 200
    for line in text.splitlines():  # one sample or comment per line, as the text format has it
        assert line.startswith("# TYPE ") or line.startswith(":tensorflow:"), line
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def test_the_metrics_page_survives_hostile_model_names(hardened: ServerProcess) -> None:
    assert_affine_answers(hardened)
    for path in (f"/v1/models/{urllib.parse.quote(HOSTILE_NAME, safe='')}:predict",
                 f"/v1/models/{urllib.parse.quote(HOSTILE_NAME, safe='')}/metadata"):
        status, answer = hardened.request("POST" if path.endswith("predict") else "GET", path,
                                          b'{"instances": [1.0]}' if path.endswith("predict") else None, 10.0)
        assert status == 404, answer
        assert HOSTILE_NAME in answer["error"]
    channel, prediction, _ = grpc_stubs(hardened.grpc_target)
    with channel, pytest.raises(grpc.RpcError) as raised:
        prediction.Predict(predict_request(HOSTILE_NAME, {"x": np.array([1.0], np.float32)}), timeout=10)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    samples = _metric_samples(hardened)
    names = {sample.labels.get("model_name") for sample in samples} - {None}
    assert names <= {"affine", "odd", "slow", ""}, names  # configured models only
    assert not any(sample.name.startswith("injected") for sample in samples)
    ok = [s.value for s in samples if s.name.startswith(":tensorflow:serving:request_count")
          and s.labels == {"model_name": "affine", "status": "OK"}]
    assert ok and ok[0] >= 1
