"""Arguments the client refuses before it sends anything: a typed error naming the argument, no RPC."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving._protos.tensorflow.core.framework import types_pb2
from serving.client import (
    AsyncRecommenderClient,
    InvalidArgumentError,
    InvalidRequestError,
    RecommenderClient,
    UserContext,
    main,
)
from serving.client_requests import InputSpec, ModelSignature, build_inputs

LONE_SURROGATE = "user\ud800"
INT64_RANGE = "[-9223372036854775808, 9223372036854775807]"
BEYOND_INT64 = [2**63, -(2**63) - 1, 10**20, np.uint64(2**64 - 1)]


@pytest.mark.parametrize("k, shown", [(2.5, "2.5 (float)"), (0, "0 (int)"), (-3, "-3 (int)"), (True, "True (bool)"),
                                      ("3", "'3' (str)"), (None, "None (NoneType)"), (np.float64(4.0), "(float64)")])
def test_a_k_that_is_not_a_positive_int_is_refused_before_any_rpc(toy_server_plain, k, shown):
    with RecommenderClient(toy_server_plain.target) as client, pytest.raises(InvalidArgumentError) as error:
        client.recommend(user_id="42", k=k)
    assert error.value.argument == "k" and "k must be an int >= 1" in str(error.value) and shown in str(error.value)
    assert isinstance(error.value, ValueError) and isinstance(error.value, InvalidRequestError)
    assert sum(toy_server_plain.servicer.calls.values()) == 0


def test_numpy_integers_are_ints(toy_server_plain):
    with RecommenderClient(toy_server_plain.target) as client:
        assert len(client.recommend(user_id="42", k=np.int64(2))) == 2


@pytest.mark.parametrize("features, name", [
    ({"user_id": LONE_SURROGATE}, "user_id"),
    ({"user_id": "42", "watch_history": ["i1", LONE_SURROGATE]}, "watch_history"),
    ({"user_id": "42", "search_history": np.array(["ok", LONE_SURROGATE], dtype=object)}, "search_history"),
    ({"user_id": "42", "region": "\udfff"}, "region"),
])
def test_text_that_utf8_cannot_encode_is_refused_before_any_rpc(toy_server_plain, features, name):
    with RecommenderClient(toy_server_plain.target) as client, pytest.raises(InvalidArgumentError) as error:
        client.recommend(features, k=3)
    assert error.value.argument == name and f"feature {name!r} of user 0" in str(error.value)
    assert "surrogates not allowed" in str(error.value)
    assert sum(toy_server_plain.servicer.calls.values()) == 0


def test_a_batch_is_checked_whole_before_its_first_chunk_is_sent(toy_server_plain):
    users = [{"user_id": str(i)} for i in range(5)] + [{"user_id": LONE_SURROGATE}]
    with RecommenderClient(toy_server_plain.target, batch_size=2) as client, pytest.raises(InvalidArgumentError,
                                                                                           match="of user 5"):
        client.recommend_batch(users, k=2)
    assert sum(toy_server_plain.servicer.calls.values()) == 0


def test_the_async_client_refuses_the_same_arguments(toy_server_plain):
    async def main() -> None:
        async with AsyncRecommenderClient(toy_server_plain.target) as client:
            with pytest.raises(InvalidArgumentError, match="k must be"):
                await client.recommend(user_id="1", k=1.5)
            with pytest.raises(InvalidArgumentError, match="'user_id' of user 1"):
                await client.recommend_batch([{"user_id": "1"}, {"user_id": LONE_SURROGATE}], k=2)

    asyncio.run(main())
    assert sum(toy_server_plain.servicer.calls.values()) == 0


@pytest.mark.parametrize(("options", "named"), [
    ({"timeout": 0.0}, "timeout"), ({"timeout": float("inf")}, "timeout"), ({"timeout": float("nan")}, "timeout"),
    ({"retries": -1}, "retries"), ({"initial_backoff": -0.1}, "initial_backoff"),
    ({"initial_backoff": 1.0, "max_backoff": 0.5}, "initial_backoff"), ({"max_backoff": float("nan")}, "max_backoff"),
    ({"max_backoff": float("inf")}, "max_backoff"), ({"batch_size": 0}, "batch_size"),
    ({"num_candidates": 0}, "num_candidates"), ({"rank_by": "clicks"}, "rank_by")])
def test_options_out_of_range_are_refused_before_any_channel(options, named):
    with pytest.raises(ValueError, match=named):
        RecommenderClient("localhost:1", **options)


@pytest.mark.parametrize("value", BEYOND_INT64, ids=repr)
@pytest.mark.parametrize("field", ["request_time", "age"])
def test_an_int64_feature_beyond_int64_is_refused_naming_it_before_any_rpc(toy_server_plain, field, value):
    with RecommenderClient(toy_server_plain.target) as client, pytest.raises(InvalidArgumentError) as error:
        client.recommend(user_id="42", k=2, **{field: value})
    assert error.value.argument == field and f"feature {field!r} of user 0: {value} is out of range" in str(error.value)
    assert f"DT_INT64: it must be an integer in {INT64_RANGE}" in str(error.value)
    assert sum(toy_server_plain.servicer.calls.values()) == 0


def test_an_int64_list_feature_is_checked_item_by_item(toy_server_plain):
    users = [{"user_id": "1"}, {"user_id": "2", "watch_history": ["i1", "i2"], "watch_history_times": [1, 2**63]}]
    with RecommenderClient(toy_server_plain.target) as client, pytest.raises(InvalidArgumentError,
                                                                             match="'watch_history_times' of user 1"):
        client.recommend_batch(users, k=2)
    assert sum(toy_server_plain.servicer.calls.values()) == 0


@pytest.mark.parametrize("value", BEYOND_INT64, ids=repr)
@pytest.mark.parametrize("field", ["request_time", "age"])
def test_a_user_context_beyond_int64_is_refused_when_made(field, value):
    with pytest.raises(ValueError, match=rf"feature '{field}': {value} is out of range for DT_INT64") as error:
        UserContext(user_id="42", **{field: value})
    assert isinstance(error.value, InvalidArgumentError) and error.value.argument == field


def test_the_int64_bounds_themselves_are_sent(toy_server_plain):
    user = UserContext(user_id="42", age=0, request_time=2**63 - 1)
    with RecommenderClient(toy_server_plain.target) as client:
        assert len(client.recommend(user, k=2, **{"request_time": -(2**63)})) == 2
        assert len(client.recommend(user, k=2)) == 2


def test_a_served_integer_input_is_checked_against_its_own_dtype():
    signature = ModelSignature("m", {"n": InputSpec("n", types_pb2.DT_INT32, 1, 0)}, {})
    assert build_inputs(signature, [{"n": 2**31 - 1}])["n"].dtype == types_pb2.DT_INT32
    with pytest.raises(InvalidArgumentError, match=r"feature 'n' for model 'm': 2147483648 is out of range for "
                                                   r"DT_INT32: it must be an integer in \[-2147483648, 2147483647\]"):
        build_inputs(signature, [{"n": 2**31}])


@pytest.mark.parametrize("value", ["99999999999999999999", "9223372036854775808", "-9223372036854775809"])
@pytest.mark.parametrize("flag", ["--request-time", "--age"])
def test_the_cli_refuses_a_value_beyond_int64_as_a_usage_error(capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", "localhost:1", "--user-id", "42", flag, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {flag}: {value} is out of range: it must be an integer in {INT64_RANGE} (int64)" in err


@pytest.mark.parametrize("flag", ["--request-time", "--age"])
def test_the_cli_still_says_invalid_int_for_text(capsys, flag):
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", "localhost:1", flag, "soon"])
    assert exit_info.value.code == 2 and f"argument {flag}: invalid int value: 'soon'" in capsys.readouterr().err
