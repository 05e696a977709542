"""Arguments the client refuses before it sends anything: a typed error naming the argument, no RPC."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from serving.client import AsyncRecommenderClient, InvalidArgumentError, InvalidRequestError, RecommenderClient

LONE_SURROGATE = "user\ud800"


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
