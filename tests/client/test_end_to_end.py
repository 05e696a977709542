"""Export -> server configs -> `python -m serving.server` (subprocess) -> client, against in-process SavedModels.

Two versions of `retrieval_bruteforce` and `ranking` are exported (the ranking logits of
version 2 are scaled by 2), so models.config serves both with the labels stable (1) and
canary (2); the server runs with the written batching and monitoring configs.
"""

from __future__ import annotations

import asyncio
import pathlib
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
import yaml

from bench import synthetic_models
from recsys_common import contract
from serving import testing
from serving.client import (
    AsyncRecommenderClient,
    ModelNotFoundError,
    RecommenderClient,
    ServerUnavailableError,
    UserContext,
)
from trainer.export import server_configs

NUM_ITEMS = 300
K = 20
MODELS = (contract.RETRIEVAL_BRUTEFORCE, contract.RANKING)
SCANN_MODELS = (contract.RETRIEVAL,)  # exported once, with the ScaNN ops (exact search at this size)
SCALE_BY_VERSION = {1: 1.0, 2: 2.0}
USERS = [
    UserContext(user_id="alice"),
    UserContext(user_id="bob", watch_history=["i1", "i2", "i3"], age=40, gender="M"),
    UserContext(user_id="carol", watch_history=[f"i{j}" for j in range(0, 300, 7)], region="r3"),
    UserContext(user_id="dave", watch_history=["i299", "unknown-item", ""]),
]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    catalog = synthetic_models.make_catalog(NUM_ITEMS, dim=8, seed=3)
    for scale in SCALE_BY_VERSION.values():  # versions 1, 2
        synthetic_models.export_synthetic_models(base, catalog, MODELS, k=K, ranking_scale=scale)
    synthetic_models.export_synthetic_models(base, catalog, SCANN_MODELS, k=K)
    paths = server_configs.write_server_configs(base, MODELS + SCANN_MODELS, keep_versions=2)
    server = testing.start_server(
        wait_for=MODELS + SCANN_MODELS,
        model_config_file=paths[server_configs.LOCAL_MODELS_CONFIG],
        enable_batching=True,
        batching_parameters_file=paths[contract.BATCHING_CONFIG],
        monitoring_config_file=paths[contract.MONITORING_CONFIG],
        log_dir=tmp_path_factory.mktemp("server_log"),
    )
    try:
        yield base, catalog, server
    finally:
        server.stop()


def _in_process(base, user: UserContext, k: int, version: int) -> list[tuple[str, float, float]]:
    """The same SavedModels called in this process, and the pipeline done by hand."""
    retrieval = tf.saved_model.load(str(base / contract.RETRIEVAL_BRUTEFORCE / str(version)))
    ranking = tf.saved_model.load(str(base / contract.RANKING / str(version)))
    features = {
        spec.name: tf.constant([list(user.watch_history) or [""]] if spec.rank == 2 else [getattr(user, spec.name)],
                               dtype=tf.string if spec.dtype == "string" else tf.int64)
        for spec in contract.USER_INPUTS
    }
    features[contract.SEARCH_HISTORY] = tf.constant([[""]])
    retrieved = retrieval.signatures[contract.SIGNATURE_NAME](**features)[contract.ITEM_IDS].numpy()[0]
    unseen = [item.decode() for item in retrieved if item.decode() not in set(user.watch_history)]
    ranked = ranking.signatures[contract.SIGNATURE_NAME](**features, candidate_ids=tf.constant([unseen]))
    scores = ranked[contract.SCORES].numpy()[0]
    watch_time = ranked[contract.EXPECTED_WATCH_TIME].numpy()[0]
    order = np.argsort(-scores, kind="stable")[:k]
    return [(unseen[i], float(scores[i]), float(watch_time[i])) for i in order]


def _tuples(recommendations):
    return [(rec.item_id, rec.score, rec.expected_watch_time) for rec in recommendations]


def _assert_close(actual, expected):
    assert [item for item, _, _ in actual] == [item for item, _, _ in expected]
    np.testing.assert_allclose([a[1:] for a in actual], [e[1:] for e in expected], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("label, version", [(None, 2), ("canary", 2), ("stable", 1)])
def test_served_recommendations_equal_the_in_process_models(deployment, label, version):
    base, _, server = deployment
    with RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE,
                           version_label=label, timeout=10) as client:
        for user in USERS:
            _assert_close(_tuples(client.recommend(user, k=8)), _in_process(base, user, 8, version))


def test_ranking_only_inputs_are_not_sent_to_a_ranker_that_does_not_read_them(deployment):
    """The synthetic ranker's signature lacks them, as a default model's: the client answers as without them."""
    base, _, server = deployment
    bob = USERS[1]
    extra = {contract.WATCH_HISTORY_TIMES: [100, 200, 300], contract.IMPRESSION_HISTORY: ["i7"],
             contract.LANGUAGE: "en"}
    with_extra = UserContext(user_id=bob.user_id, watch_history=bob.watch_history, age=bob.age, gender=bob.gender,
                             extra=extra)
    with RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE, timeout=10) as client:
        _assert_close(_tuples(client.recommend(with_extra, k=8)), _in_process(base, bob, 8, 2))


def test_concurrent_batched_requests_get_their_own_answers(deployment):
    _, _, server = deployment
    with RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE, timeout=20) as client:
        expected = [_tuples(client.recommend(user, k=5)) for user in USERS]
        results: dict[int, list] = {}
        errors: list[BaseException] = []

        def call(index: int) -> None:
            try:
                results[index] = _tuples(client.recommend(USERS[index % len(USERS)], k=5))
            except BaseException as error:  # noqa: BLE001 (re-raised in the main thread)
                errors.append(error)

        threads = [threading.Thread(target=call, args=(index,)) for index in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors
    for index, result in results.items():
        _assert_close(result, expected[index % len(USERS)])


def test_async_client_against_the_server(deployment):
    base, _, server = deployment

    async def run():
        async with AsyncRecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE,
                                          timeout=10) as client:
            return await client.recommend_batch(USERS, k=6)

    for user, result in zip(USERS, asyncio.run(run())):
        _assert_close(_tuples(result), _in_process(base, user, 6, 2))


def test_titles_from_the_saved_models_folder(deployment):
    base, catalog, server = deployment
    with RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE,
                           saved_models_dir=base) as client:
        recommendations = client.recommend(user_id="bob", k=4)
    assert [rec.title for rec in recommendations] == [catalog.titles[rec.item_id] for rec in recommendations]


def test_unknown_model_on_the_real_server(deployment):
    _, _, server = deployment
    client = RecommenderClient(server.grpc_target, retrieval_model="retrieval_missing", retries=0)
    with client, pytest.raises(ModelNotFoundError, match="retrieval_missing"):
        client.recommend(user_id="x", k=3)


def test_wait_until_ready(deployment):
    _, _, server = deployment
    with RecommenderClient(server.grpc_target, retrieval_model=contract.RETRIEVAL_BRUTEFORCE) as client:
        client.wait_until_ready(timeout=5)
    with RecommenderClient(server.grpc_target, ranking_model="ranking_missing") as client, \
            pytest.raises(ServerUnavailableError, match="'ranking_missing' not AVAILABLE"):
        client.wait_until_ready(timeout=0.3)


def test_cli_against_the_server(deployment):
    base, catalog, server = deployment
    result = subprocess.run(
        [sys.executable, "-m", "serving.client", "--target", server.grpc_target, "--user-id", "bob", "-k", "3",
         "--watch-history", "i1,i2", "--retrieval-model", contract.RETRIEVAL_BRUTEFORCE, "--saved-models", str(base)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = result.stdout.splitlines()[2:]
    expected = _in_process(base, UserContext(user_id="bob", watch_history=["i1", "i2"]), 3, 2)
    assert [row.split()[1] for row in rows] == [item for item, _, _ in expected]
    assert all(row.endswith(catalog.titles[item]) for row, (item, _, _) in zip(rows, expected))


def test_the_compose_health_check_runs_against_a_serving_server(deployment):
    _, _, server = deployment
    compose_file = pathlib.Path(__file__).resolve().parents[2] / "serving" / "docker-compose.yml"
    compose = yaml.safe_load(compose_file.read_text())
    check = compose["services"]["ranking"]["healthcheck"]["test"][-1]
    check = check.replace("$$", "$").replace("/8501", f"/{server.rest_port}")  # compose's escaping, our port
    assert subprocess.run(["bash", "-c", check], timeout=20, check=False).returncode == 0
    missing = check.replace("for model in", "for model in not_served")
    assert subprocess.run(["bash", "-c", missing], timeout=20, check=False).returncode != 0


def test_the_scann_retrieval_model_serves_like_brute_force(deployment):
    base, _, server = deployment
    with RecommenderClient(server.grpc_target, timeout=10) as client:  # retrieval_model defaults to "retrieval"
        assert client.retrieval_models == (contract.RETRIEVAL,)
        for user in USERS:
            _assert_close(_tuples(client.recommend(user, k=8)), _in_process(base, user, 8, 2))
