"""A `python -m trainer.task` killed with SIGKILL during its export, then rerun with the same --run-name:
every model ends with the same versions and the same stable/canary labels, and no `.tmp-*` is left."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from bench.synthetic_models import export_synthetic_models, make_catalog
from recsys_common import contract
from trainer.export import layout
from trainer.export.server_configs import LOCAL_MODELS_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "configs" / "tiny.yaml"
TIMEOUT_S = 900


def _task_command(out: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "trainer.task", "--config", str(TINY), "--run_dir", str(out / "runs"),
            "--output-dir", str(out / "saved_models"), "--run-name", "crash", "--ranking.compare", "[itempop]",
            "--retrieval.epochs", "1", "--export.refit", "false"]


def _kill_at_first_temporary_folder(command: list[str], saved: pathlib.Path) -> list[str]:
    """Runs `command` and SIGKILLs it as soon as a `.tmp-*` version folder appears; returns what was seen."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline and process.poll() is None:
            staged = [str(path.relative_to(saved)) for path in saved.glob(f"*/{layout.TEMP_PREFIX}*")]
            if staged:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(30)
                return staged
            time.sleep(0.02)
        raise AssertionError(f"the export never staged a version (exit {process.poll()}): "
                             f"{process.stderr.read()[-3000:] if process.stderr else ''}")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if process.stderr:
            process.stderr.close()


def _served(path: pathlib.Path) -> dict[str, tuple[list[int], dict[str, int]]]:
    config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    return {model.name: (list(model.model_version_policy.specific.versions), dict(model.version_labels))
            for model in config.model_config_list.config}


def test_a_rerun_after_a_kill_during_export_publishes_every_model_in_step(tmp_path):
    saved = tmp_path / "saved_models"
    export_synthetic_models(saved, make_catalog(60, dim=8), models=contract.MODEL_NAMES, k=10)  # version 1
    command = _task_command(tmp_path)

    staged = _kill_at_first_temporary_folder(command, saved)
    assert staged and all(layout.list_versions(saved / name) == [1] for name in contract.MODEL_NAMES), staged

    rerun = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert {name: layout.list_versions(saved / name) for name in contract.MODEL_NAMES} == {
        name: [1, 2] for name in contract.MODEL_NAMES}
    assert not list(saved.rglob(f"{layout.TEMP_PREFIX}*")) and not list(saved.glob(f"{layout.JOURNAL_PREFIX}*"))
    assert "export repair: removed the leftover" in rerun.stderr
    for config in (contract.MODELS_CONFIG, LOCAL_MODELS_CONFIG):
        assert _served(saved / config) == {
            name: ([1, 2], {"stable": 1, "canary": 2}) for name in contract.MODEL_NAMES}, config
