"""serving.client against the toy TF-Serving-like server of conftest.py (real gRPC on localhost)."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf

from recsys_common import contract
from serving.client import (
    AsyncRecommenderClient,
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotFoundError,
    RecommenderClient,
    RecommenderError,
    ServerUnavailableError,
    UserContext,
    format_table,
    main,
)
from serving.testing import free_port

USERS = [
    UserContext(user_id="7", watch_history=[], age=30),
    UserContext(user_id="42", watch_history=["i3", "i12", "i29"], age=0),
    UserContext(user_id="u-99", watch_history=[f"i{j}" for j in range(20)], age=55),
]


def _as_tuples(recommendations):
    return [(rec.item_id, rec.score, rec.expected_watch_time) for rec in recommendations]


def _assert_matches(recommendations, expected):
    assert [rec.item_id for rec in recommendations] == [item for item, _, _ in expected]
    np.testing.assert_allclose([rec.score for rec in recommendations], [s for _, s, _ in expected], rtol=1e-5)
    np.testing.assert_allclose([rec.expected_watch_time for rec in recommendations], [w for _, _, w in expected],
                               rtol=1e-5)


def _inputs(request) -> dict[str, np.ndarray]:
    return {name: tf.make_ndarray(tensor) for name, tensor in request.inputs.items()}


@pytest.mark.parametrize("user", USERS, ids=lambda user: user.user_id)
def test_recommend_equals_the_models_pipeline(toy_server, user, toy):
    with RecommenderClient(toy_server.target, timeout=5) as client:
        recommendations = client.recommend(user, k=5)
    expected = toy.expected(user.user_id, user.age, list(user.watch_history), 5)
    _assert_matches(recommendations, expected)
    assert not set(user.watch_history) & {rec.item_id for rec in recommendations}
    retrieval = toy.retrieval_scores(user.user_id, user.age)
    for rec in recommendations:
        assert rec.retrieval_score == pytest.approx(float(retrieval[int(rec.item_id[1:])]), rel=1e-6)


def test_recommend_accepts_mappings_and_keywords(toy_server_plain):
    with RecommenderClient(toy_server_plain.target) as client:
        from_context = client.recommend(UserContext(user_id="42", watch_history=["i3"]), k=4)
        from_mapping = client.recommend({"user_id": "42", "watch_history": ["i3"]}, k=4)
        from_keywords = client.recommend(user_id="42", watch_history=["i3"], k=4)
    assert _as_tuples(from_context) == _as_tuples(from_mapping) == _as_tuples(from_keywords)


def test_k_larger_than_the_unseen_candidates_returns_them_all(toy_server_plain, toy):
    with RecommenderClient(toy_server_plain.target) as client:
        all_unseen = client.recommend(user_id="5", k=50)
        some_seen = client.recommend(user_id="5", watch_history=[all_unseen[0].item_id, "i999"], k=50)
        ranking_calls = sum(r.model_spec.name == contract.RANKING for r in toy_server_plain.servicer.requests)
        assert client.recommend(user_id="5", watch_history=list(toy.item_ids), k=3) == []
        assert sum(r.model_spec.name == contract.RANKING for r in toy_server_plain.servicer.requests) == ranking_calls
    assert len(all_unseen) == toy.retrieval_k
    assert [rec.item_id for rec in some_seen] == [rec.item_id for rec in all_unseen if rec is not all_unseen[0]]


def test_requests_carry_every_input_with_defaults_and_left_padding(toy_server_plain, toy):
    users = [UserContext(user_id="1", watch_history=["i1", "i2"]), UserContext(user_id="2", watch_history=["i3"])]
    with RecommenderClient(toy_server_plain.target) as client:
        client.recommend_batch(users, k=3)
    retrieval_request, ranking_request = toy_server_plain.servicer.requests
    retrieval = _inputs(retrieval_request)
    assert set(retrieval) == {spec.name for spec in contract.RETRIEVAL_INPUTS}
    np.testing.assert_array_equal(retrieval["watch_history"], np.array([[b"", b"i1", b"i2"], [b"", b"", b"i3"]]))
    np.testing.assert_array_equal(retrieval["search_history"], np.array([[b""], [b""]]))
    np.testing.assert_array_equal(retrieval["gender"], np.array([b"", b""]))
    assert retrieval["age"].dtype == np.int64 and retrieval["age"].tolist() == [0, 0]
    assert retrieval["request_time"].tolist() == [0, 0]
    ranking = _inputs(ranking_request)
    assert set(ranking) == {spec.name for spec in contract.RANKING_INPUTS}
    assert ranking["candidate_ids"].shape == (2, toy.retrieval_k)  # one fixed width, "" pads at the end
    for spec in contract.RETRIEVAL_INPUTS:  # the user tensors are encoded once and sent to both models
        np.testing.assert_array_equal(ranking[spec.name], retrieval[spec.name])
    assert retrieval_request.model_spec.signature_name == contract.SIGNATURE_NAME


def test_recommend_batch_equals_single_calls_and_splits_into_batches(toy_server_plain):
    with RecommenderClient(toy_server_plain.target, batch_size=2) as client:
        batch = client.recommend_batch(USERS, k=4)
        singles = [client.recommend(user, k=4) for user in USERS]
    assert [_as_tuples(r) for r in batch] == [_as_tuples(r) for r in singles]
    batch_sizes = [r.inputs["user_id"].tensor_shape.dim[0].size for r in toy_server_plain.servicer.requests[:4]]
    assert batch_sizes == [2, 2, 1, 1]


def test_async_client_gives_the_sync_results(toy_server_plain):
    async def run():
        async with AsyncRecommenderClient(toy_server_plain.target, batch_size=2) as client:
            return await client.recommend(USERS[1], k=5), await client.recommend_batch(USERS, k=5)

    single, batch = asyncio.run(run())
    with RecommenderClient(toy_server_plain.target) as client:
        assert _as_tuples(single) == _as_tuples(client.recommend(USERS[1], k=5))
        assert [_as_tuples(r) for r in batch] == [_as_tuples(r) for r in client.recommend_batch(USERS, k=5)]


def test_sharded_retrieval_merges_to_the_unsharded_result(toy_server_plain):
    shards = [contract.shard_model_name(0), contract.shard_model_name(1)]
    with RecommenderClient(toy_server_plain.target) as whole, \
            RecommenderClient(toy_server_plain.target, retrieval_model=shards) as sharded:
        for user in USERS:
            assert _as_tuples(sharded.recommend(user, k=6)) == _as_tuples(whole.recommend(user, k=6))


def test_signature_is_fetched_once_per_model(toy_server_plain):
    with RecommenderClient(toy_server_plain.target) as client:
        for user in USERS:
            client.recommend(user, k=2)
    assert toy_server_plain.servicer.calls["GetModelMetadata"] == 2


def test_every_rpc_carries_the_deadline(toy_server_plain):
    with RecommenderClient(toy_server_plain.target, timeout=1.5) as client:
        client.recommend(USERS[0], k=2)
    assert len(toy_server_plain.servicer.deadlines) == 4
    assert all(0 < remaining < 1.6 for remaining in toy_server_plain.servicer.deadlines)  # gRPC rounds up a little


@pytest.mark.parametrize("failures, retries, succeeds", [(2, 3, True), (2, 2, True), (3, 2, False)])
def test_unavailable_is_retried_with_backoff(toy_server_plain, failures, retries, succeeds, toy):
    servicer = toy_server_plain.servicer
    with RecommenderClient(toy_server_plain.target, retries=retries, initial_backoff=0.04, seed=0) as client:
        client.signature(contract.RANKING)  # metadata fetched first, so the failures hit Predict
        servicer.fail_next.extend([grpc.StatusCode.UNAVAILABLE] * failures)
        started = time.monotonic()
        if succeeds:
            expected = toy.expected("42", 0, [], 3)
            _assert_matches(client.recommend(user_id="42", k=3), expected)
        else:
            with pytest.raises(ServerUnavailableError, match=f"after {retries + 1} attempts"):
                client.recommend(user_id="42", k=3)
        elapsed = time.monotonic() - started
    attempts = min(failures, retries + 1) + (1 if succeeds else 0)
    assert servicer.calls["Predict"] == attempts + (1 if succeeds else 0)  # + the ranking call
    waits = min(failures, retries)
    assert elapsed >= sum(0.5 * 0.04 * 2**attempt for attempt in range(waits))  # jitter keeps >= half


@pytest.mark.parametrize(
    "code, error_type",
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidRequestError),
        (grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
        (grpc.StatusCode.INTERNAL, RecommenderError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, RecommenderError),
    ],
)
def test_other_errors_are_not_retried_and_are_mapped(toy_server_plain, code, error_type):
    servicer = toy_server_plain.servicer
    with RecommenderClient(toy_server_plain.target, retries=3) as client:
        client.signature(contract.RANKING)
        servicer.fail_next.append(code)
        with pytest.raises(error_type, match=code.name) as raised:
            client.recommend(user_id="1", k=2)
    assert raised.value.code == code and raised.value.model == contract.RETRIEVAL
    assert servicer.calls["Predict"] == 1


def test_unknown_model_raises_model_not_found(toy_server_plain):
    client = RecommenderClient(toy_server_plain.target, ranking_model="no_such_model")
    with client, pytest.raises(ModelNotFoundError, match=r"no_such_model.*Servable not found"):
        client.recommend(user_id="1", k=2)


def test_deadline_exceeded(toy_server_plain):
    toy_server_plain.servicer.stall_seconds = 0.5
    with RecommenderClient(toy_server_plain.target, timeout=0.1, retries=3) as client:
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="DEADLINE_EXCEEDED"):
            client.recommend(user_id="1", k=2)
        assert time.monotonic() - started < 0.45
    assert toy_server_plain.servicer.calls["GetModelMetadata"] == 1  # not retried


def test_no_server_is_unavailable_after_retries():
    client = RecommenderClient(f"127.0.0.1:{free_port()}", retries=2, initial_backoff=0.01, timeout=1)
    with client, pytest.raises(ServerUnavailableError, match="after 3 attempts"):
        client.recommend(user_id="1", k=2)


@pytest.mark.parametrize(
    "features, message",
    [
        ({"user_id": "1", "age": "thirty"}, r"'age'.*DT_INT64.*str"),
        ({"user_id": 42}, r"'user_id'.*DT_STRING.*int"),
        ({"user_id": "1", "watch_history": "i1 i2"}, r"'watch_history'.*list"),
        ({"user_id": "1", "watch_history": ["i1", 7]}, r"'watch_history'.*DT_STRING.*int"),
        ({"user_id": "1", "age": True}, r"'age'.*bool"),
        ({"user_id": "1", "agee": 3}, r"unknown feature\(s\) \['agee'\]"),
    ],
)
def test_bad_features_are_rejected_before_any_predict(toy_server_plain, features, message):
    with RecommenderClient(toy_server_plain.target) as client, pytest.raises(InvalidRequestError, match=message):
        client.recommend(features, k=3)
    assert toy_server_plain.servicer.calls["Predict"] == 0


@pytest.mark.parametrize("bad_option", [{"timeout": 0}, {"retries": -1}, {"num_candidates": 0}, {"rank_by": "x"},
                                        {"batch_size": 0}, {"initial_backoff": 1, "max_backoff": 0.5}])
def test_bad_options_are_rejected(bad_option):
    with pytest.raises(ValueError, match=next(iter(bad_option))):
        RecommenderClient("127.0.0.1:1", **bad_option)


def test_num_candidates_limits_what_is_ranked(toy_server_plain, toy):
    with RecommenderClient(toy_server_plain.target, num_candidates=4) as client:
        recommendations = client.recommend(user_id="42", k=10)
    scores = toy.retrieval_scores("42", 0)
    top4 = set(toy.item_ids[np.argsort(-scores, kind="stable")[:4]])
    assert {rec.item_id for rec in recommendations} == top4
    assert toy_server_plain.servicer.requests[-1].inputs["candidate_ids"].tensor_shape.dim[1].size == 4


def _write_metadata(root, model, metadata):
    path = root / model / "3" / "assets" / contract.METADATA_ASSET
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metadata))


def test_titles_and_defaults_come_from_the_export_metadata(toy_server_plain, tmp_path, toy):
    titles = {item: f"Title of {item}" for item in toy.item_ids[::2]}
    _write_metadata(tmp_path, contract.RETRIEVAL, {
        contract.METADATA_ITEM_TITLES: titles,
        contract.METADATA_INPUTS: {"region": {"dtype": "string", "rank": 1, "default": "nowhere"}},
    })
    (tmp_path / contract.RETRIEVAL / "1").mkdir()  # an older version without metadata is not read
    with RecommenderClient(toy_server_plain.target, saved_models_dir=tmp_path) as client:
        recommendations = client.recommend(user_id="42", k=8)
    assert [rec.title for rec in recommendations] == [titles.get(rec.item_id) for rec in recommendations]
    assert any(rec.title for rec in recommendations) and any(rec.title is None for rec in recommendations)
    retrieval_inputs = _inputs(toy_server_plain.servicer.requests[0])
    assert retrieval_inputs["region"].tolist() == [b"nowhere"]


def test_cli_prints_a_table(toy_server_plain, capsys, toy):
    status = main(["--target", toy_server_plain.target, "--user-id", "42", "-k", "4", "--watch-history", "i3,i12"])
    lines = capsys.readouterr().out.splitlines()
    assert status == 0
    assert lines[0].split() == ["rank", "item_id", "score", "watch_time", "retrieval", "title"]
    expected = toy.expected("42", 0, ["i3", "i12"], 4)
    assert [line.split()[:2] for line in lines[2:]] == [[str(rank), item] for rank, (item, _, _) in
                                                        enumerate(expected, start=1)]


def test_cli_reports_errors_with_exit_status_1(toy_server_plain, capsys):
    status = main(["--target", toy_server_plain.target, "--ranking-model", "missing", "--timeout", "2"])
    assert status == 1
    assert "Servable not found" in capsys.readouterr().err


def test_format_table_aligns_columns():
    from serving.client import Recommendation

    table = format_table([Recommendation("i1", 0.5, 12.25, 1.0, "A"), Recommendation("item-22", 0.25, 3.0, 0.5)])
    lines = table.splitlines()
    assert len({len(line.rstrip()) for line in lines[:2]}) == 1
    assert lines[2].split() == ["1", "i1", "0.5000", "12.2", "1.000", "A"]
    assert lines[3].split() == ["2", "item-22", "0.2500", "3.0", "0.500"]


def test_retrieval_can_live_on_another_server(toy_server_plain, second_toy_server, toy):
    with RecommenderClient(toy_server_plain.target, retrieval_target=second_toy_server.target) as client:
        _assert_matches(client.recommend(user_id="42", k=4), toy.expected("42", 0, [], 4))
    assert [r.model_spec.name for r in second_toy_server.servicer.requests] == [contract.RETRIEVAL]
    assert [r.model_spec.name for r in toy_server_plain.servicer.requests] == [contract.RANKING]


def test_user_context_fields_are_the_contract_user_inputs():
    import dataclasses

    names = [field.name for field in dataclasses.fields(UserContext) if field.name != "extra"]
    assert names == [spec.name for spec in contract.USER_INPUTS]
    defaults = UserContext().features()
    assert {name: defaults[name] for name in names if not isinstance(defaults[name], tuple)} == {
        spec.name: spec.default for spec in contract.USER_INPUTS if spec.rank == 1
    }


@pytest.mark.parametrize("failures, succeeds", [(1, True), (3, False)])
def test_async_client_retries_unavailable_only(toy_server_plain, toy, failures, succeeds):
    servicer = toy_server_plain.servicer

    async def run():
        async with AsyncRecommenderClient(toy_server_plain.target, retries=2, initial_backoff=0.01) as client:
            await client.recommend(user_id="1", k=1)  # signatures cached
            servicer.fail_next.extend([grpc.StatusCode.UNAVAILABLE] * failures)
            return await client.recommend(user_id="42", k=3)

    if succeeds:
        _assert_matches(asyncio.run(run()), toy.expected("42", 0, [], 3))
    else:
        with pytest.raises(ServerUnavailableError, match="after 3 attempts"):
            asyncio.run(run())
    assert servicer.calls["Predict"] == 2 + min(failures, 3) + (2 if succeeds else 0)  # + retrieval and ranking
