"""Start `python -m serving.server` as a subprocess on free ports and wait until its models serve.

For tests and benchmarks. Importing this module does not import TensorFlow (it talks to the
server over REST with the standard library), so the thin client's tests can use it too:

    with running_server(model_config_file=base / "models.local.config",
                        wait_for=["retrieval", "ranking"]) as server:
        client = RecommenderClient(server.grpc_target)
        ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
_BIND_ATTEMPTS = 3


def free_port() -> int:
    """A TCP port that was free a moment ago (the server binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerError(RuntimeError):
    """The server process exited or did not get its models AVAILABLE in time (its log is in the message)."""


@dataclasses.dataclass
class ServerProcess:
    """A running server subprocess.

    Attributes:
        process: the subprocess.
        grpc_port / rest_port: its ports on localhost.
        log_path: where its stdout and stderr go.
    """

    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return f"localhost:{self.grpc_port}"

    @property
    def rest_url(self) -> str:
        return f"http://localhost:{self.rest_port}"

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def get_json(self, path: str, timeout: float = 10.0) -> tuple[int, Any]:
        """GET a REST path; returns (HTTP status, parsed JSON body or the raw text)."""
        return self.request("GET", path, None, timeout)

    def post_json(self, path: str, body: Any, timeout: float = 30.0) -> tuple[int, Any]:
        """POST a JSON body (or raw bytes) to a REST path; returns (HTTP status, parsed body)."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode("utf-8")
        return self.request("POST", path, data, timeout)

    def request(self, method: str, path: str, data: bytes | None, timeout: float) -> tuple[int, Any]:
        request = urllib.request.Request(f"{self.rest_url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode("utf-8", errors="replace")

    def model_versions(self, name: str) -> dict[int, dict[str, Any]]:
        """The model status by version ({} while the model has none): {version: {"state", "status"}}."""
        status, body = self.get_json(f"/v1/models/{name}")
        if status != 200:
            return {}
        return {int(entry["version"]): entry for entry in body.get("model_version_status", [])}

    def wait_until(self, name: str, predicate: Any, timeout: float = 60.0, what: str = "") -> dict[int, Any]:
        """Polls the model status until predicate(versions) holds; returns the versions."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise ServerError(f"The server exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            try:
                versions = self.model_versions(name)
            except OSError:
                versions = {}
            if predicate(versions):
                return versions
            if time.monotonic() > deadline:
                raise ServerError(f"Timed out waiting for {what or 'a condition'} on model {name}; status "
                                  f"{versions}\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def wait_until_available(self, name: str, version: int | None = None, timeout: float = 60.0) -> None:
        """Blocks until the model (or that version of it) is AVAILABLE."""
        def ready(versions: Mapping[int, Any]) -> bool:
            return any(v.get("state") == "AVAILABLE" and version in (None, number) for number, v in versions.items())

        self.wait_until(name, ready, timeout, f"version {version or 'any'} AVAILABLE")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then SIGKILL if it does not exit in time; returns the exit status."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)


def server_command(grpc_port: int, rest_port: int, flags: Mapping[str, Any]) -> list[str]:
    """The command line of `python -m serving.server` with --flag=value arguments."""
    args = [sys.executable, "-m", "serving.server", f"--port={grpc_port}", f"--rest_api_port={rest_port}"]
    for name, value in flags.items():
        if value is None:
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        args.append(f"--{name}={text}")
    return args


def start_server(wait_for: Sequence[str] = ("default",), timeout: float = 90.0, log_dir: Path | None = None,
                 env: Mapping[str, str] | None = None, **flags: Any) -> ServerProcess:
    """Starts the server on free ports and waits until every model in `wait_for` is AVAILABLE.

    Args:
        wait_for: model names that must be AVAILABLE before returning (empty: only wait for the port).
        timeout: seconds to wait.
        log_dir: where to put the server log (default: a temporary folder).
        env: extra environment variables.
        **flags: server flags by their names, e.g. model_base_path=..., file_system_poll_wait_seconds=0.2,
            enable_batching=True (see `python -m serving.server --help`).

    Raises:
        ServerError: when the process exits or the models do not become AVAILABLE in time.
    """
    flags.setdefault("file_system_poll_wait_seconds", 0.2)
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="serving-server-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    process_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    for attempt in range(_BIND_ATTEMPTS):
        log_path = log_dir / f"server-{attempt}.log"
        grpc_port, rest_port = free_port(), free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(server_command(grpc_port, rest_port, flags), cwd=PROJECT_ROOT,
                                       stdout=log, stderr=subprocess.STDOUT, env=process_env)
        server = ServerProcess(process, grpc_port, rest_port, log_path)
        try:
            _wait_for_rest(server, timeout)
            for name in wait_for:
                server.wait_until_available(name, timeout=timeout)
            return server
        except ServerError:
            server.stop()
            if "Cannot bind" not in server.log() or attempt == _BIND_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _wait_for_rest(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise ServerError(f"The server exited with {server.process.returncode}:\n{server.log()[-4000:]}")
        try:
            with socket.create_connection(("localhost", server.rest_port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                log = server.log()[-4000:]
                raise ServerError(f"The server did not open its ports in {timeout} s:\n{log}") from None
            time.sleep(0.1)


@contextlib.contextmanager
def running_server(**kwargs: Any) -> Iterator[ServerProcess]:
    """`start_server` as a context manager that stops the server on exit."""
    server = start_server(**kwargs)
    try:
        yield server
    finally:
        server.stop()
