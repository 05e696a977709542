"""Serving stands alone: it imports nothing from trainer; its batching queue drops work whose caller gave up;
its SSL config is read as TF Serving defines it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import pytest

from serving.batching import BatchingOptions, BatchScheduler
from serving.errors import ServingError
from serving.model_config import ConfigError, read_ssl_config
from serving.testing import PROJECT_ROOT

PEM = "-----BEGIN X-----\\nAAAA\\n-----END X-----\\n"


@pytest.mark.parametrize("module", ["serving.server", "serving.client", "recsys_common.contract"])
def test_serving_imports_nothing_from_trainer(module: str) -> None:
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m == 'trainer' or m.startswith('trainer.')))\n"
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    trainer_modules, tensorflow_loaded = result.stdout.splitlines()[-2:]
    assert trainer_modules == "[]"
    assert tensorflow_loaded == str(module == "serving.server")  # the client and the contract stay light


def test_the_batching_queue_drops_a_request_whose_deadline_passed() -> None:
    runs: list[int] = []

    def run(inputs: Mapping[str, np.ndarray], time_left: float | None) -> dict[str, np.ndarray]:
        runs.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}

    # A batch waits 0.4 s for company; the first caller gives up after 0.05 s.
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=400_000, num_batch_threads=1))
    try:
        started = time.monotonic()
        with pytest.raises(ServingError) as caught:
            scheduler.run("key", {"x": np.array([1.0])}, run, deadline=started + 0.05)
        assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 0.3  # answered at its deadline, not when the batch ran
        answers: list[dict[str, np.ndarray]] = []
        later = threading.Thread(target=lambda: answers.append(
            scheduler.run("key", {"x": np.array([3.0, 4.0])}, run, deadline=time.monotonic() + 10)))
        later.start()
        later.join(timeout=10)
        np.testing.assert_array_equal(answers[0]["y"], [6.0, 8.0])
        assert runs == [2]  # the abandoned row never ran
        with pytest.raises(ServingError) as expired:
            scheduler.run("key", {"x": np.array([1.0])}, run, deadline=time.monotonic() - 1)
        assert expired.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    finally:
        scheduler.stop()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_ssl_config_is_tf_servings_text_proto(tmp_path: Path) -> None:
    config = read_ssl_config(_write(tmp_path / "ssl.config", f'server_key: "{PEM}"\nserver_cert: "{PEM}"\n'
                                    f'custom_ca: "{PEM}"\nclient_verify: true\n'))
    assert config.client_verify and config.server_key.startswith("-----BEGIN X-----\n")


@pytest.mark.parametrize(("text", "message"), [
    ('server_key: "/etc/key.pem"\nserver_cert: "/etc/cert.pem"\n', "server_key must hold the PEM text"),
    (f'server_key: "{PEM}"\n', "server_cert must hold the PEM text"),
    (f'server_key: "{PEM}"\nserver_cert: "{PEM}"\nclient_verify: true\n', "client_verify needs a custom_ca"),
    (f'server_key: "{PEM}"\nserver_cert: "{PEM}"\nverify_client: true\n', "verify_client"),
], ids=["file names", "no certificate", "verify without ca", "misspelt field"])
def test_a_bad_ssl_config_is_refused_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "ssl.config", text)
    with pytest.raises(ConfigError, match=message) as caught:
        read_ssl_config(path)
    assert str(path) in str(caught.value)
