"""bench.scann_vs_bruteforce: the timed requests reach the session as the request's own ids, encoded once."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from bench.scann_vs_bruteforce import (
    _floor_runner,
    _raw_runner,
    _run,
    _session_runner,
    as_fed,
    over_fetch_arguments,
    raw_searcher,
    session_floor,
)

REQUESTS = {
    "user_id": np.array(["u1", "Zoë"], dtype=object),
    "watch_history": np.array([["i1", ""], ["i2", "i3"]], dtype=object),
    "age": np.array([31, 0], dtype=np.int64),
}


@pytest.fixture(scope="module")
def echo_model(tmp_path_factory: pytest.TempPathFactory):
    """A SavedModel whose signature returns its string inputs, loaded the way the benchmark loads models."""
    import tensorflow as tf

    from serving.session_model import SessionModel

    class Echo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([None, None], tf.string),
                                      tf.TensorSpec([None], tf.int64)])
        def serve(self, user_id, watch_history, age):
            return {"user_id": tf.identity(user_id), "watch_history": tf.identity(watch_history), "age": age + 0}

    folder = pathlib.Path(tmp_path_factory.mktemp("echo"))
    module = Echo()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    with SessionModel.load(folder) as model:
        yield model


def test_as_fed_encodes_strings_once_and_leaves_numbers_alone() -> None:
    fed = as_fed(REQUESTS)
    assert fed["user_id"].tolist() == [b"u1", "Zoë".encode()]
    assert fed["watch_history"].shape == (2, 2) and fed["watch_history"][0, 1] == b""
    assert fed["age"] is REQUESTS["age"]
    again = as_fed(fed)  # what the timed loop used to do to each request: bytes must stay the same bytes
    for name in REQUESTS:
        np.testing.assert_array_equal(again[name], fed[name])


@pytest.mark.parametrize("start, batch", [(0, 1), (1, 1), (0, 2)])
def test_the_session_receives_the_requests_own_ids(echo_model, start: int, batch: int) -> None:
    fed = as_fed(REQUESTS)
    answer = _run(echo_model, {name: values[start:start + batch] for name, values in fed.items()})
    expected = np.vectorize(lambda text: text.encode("utf-8"), otypes=[object])(REQUESTS["watch_history"])
    np.testing.assert_array_equal(answer["watch_history"], expected[start:start + batch])
    np.testing.assert_array_equal(answer["age"], REQUESTS["age"][start:start + batch])
    timed = _session_runner(echo_model, fed)(start, batch)  # the timed runner feeds the same rows, unconverted
    np.testing.assert_array_equal(timed["user_id"], answer["user_id"])
    np.testing.assert_array_equal(timed["watch_history"], answer["watch_history"])


TREE = {"brute_force": False, "num_leaves": 1000, "num_leaves_to_search": 30, "reorder": 800, "dimensions_per_block": 2}


@pytest.mark.parametrize(("params", "history_width", "num_items", "arguments"), [
    (TREE, 20, 1_000_000, {"final_num_neighbors": 120, "leaves_to_search": 36, "pre_reorder_num_neighbors": 960}),
    (TREE, 0, 1_000_000, {"final_num_neighbors": 100, "leaves_to_search": 30, "pre_reorder_num_neighbors": 800}),
    (TREE, 50, 130, {"final_num_neighbors": 130, "leaves_to_search": 39, "pre_reorder_num_neighbors": 1040}),
    ({"brute_force": True}, 20, 1_000_000, {"final_num_neighbors": 120}),
])
def test_the_over_fetch_variant_asks_what_the_export_asks(params, history_width, num_items, arguments) -> None:
    assert over_fetch_arguments(params, 100, history_width, num_items) == arguments


@pytest.mark.parametrize("batch", [1, 4])
def test_raw_runners_return_the_asked_number_of_neighbours(batch: int) -> None:
    rng = np.random.default_rng(0)
    items, queries = rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(8, 8)).astype(np.float32)
    params = {**TREE, "num_leaves": 50, "num_leaves_to_search": 5, "reorder": 200}
    searcher = raw_searcher(items, params)
    for arguments in ({"final_num_neighbors": 100}, over_fetch_arguments(params, 100, 20, len(items))):
        indices = np.asarray(_raw_runner(searcher, queries, arguments)(2, batch)[0])
        assert indices.shape[-1] == arguments["final_num_neighbors"]


EXHAUSTIVE_TREE = {**TREE, "num_leaves": 50, "num_leaves_to_search": 50, "reorder": 3000}


@pytest.mark.parametrize(("params", "centre", "batch"), [
    ({"brute_force": True}, False, 1), ({"brute_force": True}, False, 4), (EXHAUSTIVE_TREE, True, 4)])
def test_the_session_floor_answers_the_over_fetched_search_in_a_session(params, centre: bool, batch: int) -> None:
    from bench.machine import serving_thread_flags
    from serving.session_model import serving_session_config

    rng = np.random.default_rng(1)
    items, queries = rng.normal(size=(3000, 8)).astype(np.float32), rng.normal(size=(8, 8)).astype(np.float32)
    arguments = over_fetch_arguments(params, 100, 20, len(items))
    threads = serving_thread_flags()
    config = serving_session_config(threads["tensorflow_intra_op_parallelism"],
                                    threads["tensorflow_inter_op_parallelism"])
    session, search = session_floor(items, params, centre, arguments, config)
    try:
        indices, scores = _floor_runner(search, queries)(2, batch)
    finally:
        session.close()
    # every leaf searched and every candidate re-scored: exact, so NumPy's ranking of q·x (q·(x - mean) ranks alike)
    expected = np.argsort(-(queries[2:2 + batch] @ items.T), axis=1, kind="stable")[:, :120]
    np.testing.assert_array_equal(indices, expected)
    assert scores.shape == (batch, 120) and np.all(np.diff(scores, axis=1) <= 1e-5)
