"""Ranking `fit` on two replicas: each takes its own slice of every global batch, and a step equals one step
on the whole batch (the all-reduced gradients are the global mean's)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
RUNNER = pathlib.Path(__file__).with_name("two_replica_runner.py")


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("replicas") / "out.json"
    completed = subprocess.run([sys.executable, str(RUNNER), str(out)], cwd=ROOT, capture_output=True, text=True,
                               timeout=300, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text())


def test_each_replica_reads_its_slice_of_every_global_batch(two_replicas: dict) -> None:
    rows, batch, seed = 20, 8, 3  # two_replica_runner.py
    order = np.random.default_rng([seed, 0]).permutation(rows)  # epoch 0
    steps = rows // batch  # the remainder (4 rows) sits out this epoch
    assert two_replicas["replicas"] == 2 and len(two_replicas["rows"]) == steps
    for step, (first, second) in enumerate(two_replicas["rows"]):
        global_batch = order[step * batch:(step + 1) * batch]
        assert first == global_batch[:batch // 2].tolist() and second == global_batch[batch // 2:].tolist()


def test_streamed_epochs_give_every_replica_the_same_number_of_full_batches(two_replicas: dict) -> None:
    streamed, global_batch = two_replicas["streamed"], 8 * 16  # two_replica_runner.py
    assert streamed["steps"] == streamed["examples"] // global_batch == len(streamed["shapes"])
    assert all(shapes == [[global_batch // 2, 3]] * 2 for shapes in streamed["shapes"])


def test_a_step_on_two_replicas_equals_a_step_on_the_whole_batch(two_replicas: dict) -> None:
    assert two_replicas["moved"] > 1e-3  # the step did change the weights
    assert two_replicas["difference"] < 1e-6
