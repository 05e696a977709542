"""`python -m trainer.task` as two MultiWorkerMirroredStrategy workers on localhost.

Both workers train the retrieval and the ranking model in sync (the all-reduce keeps their weights
equal, so every metric they compute from them is equal); only the chief keeps a run folder and
exports, and its export loads and answers the way TF Serving runs it (serving.session_model).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from recsys_common import contract
from trainer.distribute import tf_config
from trainer.export import layout
from trainer.retrieval.export import default_request

from .conftest import TINY_CONFIG

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKERS = 2
SHARDS = 2


def _summary(stdout: str, stage: str) -> dict[str, str]:
    """{metric: value} of one stage in the summary table that `trainer.task` prints."""
    rows = (line.split() for line in stdout.splitlines())
    return {row[1]: row[2] for row in rows if len(row) == 3 and row[0] == stage}


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    from serving.testing import free_port

    shared = tmp_path_factory.mktemp("shared")
    hosts = [f"localhost:{free_port()}" for _ in range(WORKERS)]
    command = [sys.executable, "-m", "trainer.task", "--config", str(TINY_CONFIG), "--run_dir", str(shared / "runs"),
               "--output-dir", str(shared / "saved_models"), "--run-name", "mw", "--ranking.compare", "[]",
               "--ranking.epochs", "3",  # one tiny epoch is too noisy to tell learning from chance
               "--export.num_shards", str(SHARDS)]
    processes = [subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, "TF_CONFIG": tf_config(hosts, "worker", index)})
                 for index in range(WORKERS)]
    outputs = []
    try:
        for process in processes:
            stdout, stderr = process.communicate(timeout=600)  # two workers train, refit and export on 2 cores
            outputs.append((process.returncode, stdout, stderr))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    return {"shared": shared, "outputs": outputs}


def test_both_workers_finish_with_identical_retrieval_metrics(cluster_run: dict) -> None:
    outputs = cluster_run["outputs"]
    for returncode, _, stderr in outputs:
        assert returncode == 0, stderr[-4000:]
    chief, worker = (_summary(stdout, "retrieval") for _, stdout, _ in outputs)
    assert {"recall@10", "ndcg@10", "recall@50", "epochs_trained"} <= set(chief)
    assert chief == worker  # metrics of the trained towers on the same test requests: the weights agree
    assert float(chief["recall@50"]) > float(chief["popularity_recall@50"])  # it did learn


def test_both_workers_train_the_ranking_model_in_sync(cluster_run: dict) -> None:
    chief, worker = (_summary(stdout, "ranking") for _, stdout, _ in cluster_run["outputs"])
    assert {"test_hr@10", "test_auc", "validation_ndcg@10", "two_stage_recall@10"} <= set(chief)
    assert chief == worker  # the same scores of the same held-out candidates: the ranking weights agree
    assert float(chief["test_auc"]) > 0.6  # above chance (0.5): it learned from the shared batches


def test_only_the_chief_writes_to_the_shared_folders(cluster_run: dict) -> None:
    shared: pathlib.Path = cluster_run["shared"]  # type: ignore[assignment]
    assert sorted(p.name for p in (shared / "runs").iterdir()) == ["mw"]
    metrics = json.loads((shared / "runs" / "mw" / "metrics.json").read_text())
    assert len(metrics["retrieval"]["history"]["loss"]) == 2  # tests/configs/tiny.yaml: 2 epochs
    for model in [*contract.MODEL_NAMES, *map(contract.shard_model_name, range(SHARDS))]:
        assert sorted(p.name for p in (shared / "saved_models" / model).iterdir()) == ["1"], model
    worker_stdout = cluster_run["outputs"][1][1]  # type: ignore[index]
    scratch = pathlib.Path(worker_stdout.split("run folder:")[1].split()[0])
    assert not scratch.is_relative_to(shared) and not scratch.exists()  # written outside, then deleted


def test_the_chiefs_export_loads_and_serves(cluster_run: dict) -> None:
    from serving.session_model import SessionModel

    saved = cluster_run["shared"] / "saved_models"  # type: ignore[operator]
    metadata = layout.read_metadata(saved / contract.RETRIEVAL_BRUTEFORCE / "1")
    catalogue = set(metadata[contract.METADATA_ITEM_TITLES])
    history = np.array([sorted(catalogue)[:3], ["", "", sorted(catalogue)[5]]], dtype=object)
    request = {**default_request(2), contract.USER_ID: np.array(["u1", "never-seen"], dtype=object),
               contract.WATCH_HISTORY: history}
    answers = {}
    for model in (contract.RETRIEVAL_BRUTEFORCE, contract.RETRIEVAL):
        with SessionModel.load(saved / model / "1") as session:
            answers[model] = session.run(contract.SIGNATURE_NAME, request)
    ids = answers[contract.RETRIEVAL_BRUTEFORCE][contract.ITEM_IDS]
    scores = answers[contract.RETRIEVAL_BRUTEFORCE][contract.SCORES]
    assert ids.shape == (2, metadata["k"]) and {item.decode() for item in ids.ravel()} <= catalogue
    assert np.all(np.diff(scores, axis=1) <= 0)
    np.testing.assert_array_equal(answers[contract.RETRIEVAL][contract.ITEM_IDS], ids)  # tiny index: exact ScaNN
    shard_answers = []
    for shard in range(SHARDS):  # export.num_shards: the index split in two; merged, the shards give the same top-K
        with SessionModel.load(saved / contract.shard_model_name(shard) / "1") as session:
            shard_answers.append(session.run(contract.SIGNATURE_NAME, request))
    merged_scores = np.concatenate([answer[contract.SCORES] for answer in shard_answers], axis=1)
    merged_ids = np.concatenate([answer[contract.ITEM_IDS] for answer in shard_answers], axis=1)
    best = np.argsort(-merged_scores, axis=1, kind="stable")[:, :ids.shape[1]]
    np.testing.assert_array_equal(np.take_along_axis(merged_ids, best, axis=1), ids)
    with SessionModel.load(saved / contract.RANKING / "1") as ranking:
        ranked = ranking.run(contract.SIGNATURE_NAME, {**request, contract.CANDIDATE_IDS: ids})
    assert ranked[contract.SCORES].shape == ids.shape
    assert np.all((ranked[contract.SCORES] > 0) & (ranked[contract.SCORES] < 1))
