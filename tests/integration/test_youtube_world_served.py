"""The YouTube world's models (impressions, channels, languages) served by `python -m serving.server`.

The ranker of this module trains on impressions and reads the ranking-only inputs (watch history
times, impression history, language). Served through the client with those inputs, it answers as
in process; a client that sends none of them (one built for the signature before they existed)
is still answered, as in process with their defaults; so is a raw Predict request that leaves them
out (a hand-written client built for that signature), from the defaults in the SignatureDef.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from recsys_common import contract
from serving.client import RecommenderClient, UserContext
from tests.integration.test_trained_models_served import TIMEOUT_S, Expected, K, _python, assert_matches
from tests.serving_server.server_test_models import grpc_stubs, predict_request
from trainer.ranking.train import score
from trainer.retrieval import retrieve

CONFIG_OVERRIDES = {"synthetic.slate_size": 5, "synthetic.clickbait_fraction": 0.1, "synthetic.freshness_days": 2.0,
                    "synthetic.num_channels": 8, "synthetic.num_languages": 3}
CONTEXT_INPUTS = tuple(spec.name for spec in contract.RANKING_CONTEXT_INPUTS)


@pytest.fixture(scope="module")
def user(trained) -> UserContext:
    """A test-period user with watches, impressions and a language, as the client would describe them."""
    examples = trained.data.test_examples
    row = next(row for row in range(len(examples[contract.USER_ID]))
               if (examples[contract.WATCH_HISTORY][row] != "").sum() >= 3
               and (examples[contract.IMPRESSION_HISTORY][row] != "").sum() >= 5)
    known = [i for i, item in enumerate(examples[contract.WATCH_HISTORY][row]) if item]
    extra = {contract.WATCH_HISTORY_TIMES: [int(t) for t in examples[contract.WATCH_HISTORY_TIMES][row][known]],
             contract.IMPRESSION_HISTORY: _python(examples[contract.IMPRESSION_HISTORY][row]),
             contract.LANGUAGE: str(examples[contract.LANGUAGE][row])}
    return UserContext(**{spec.name: _python(examples[spec.name][row]) for spec in contract.USER_INPUTS},
                       extra=extra)


def test_the_ranker_reads_the_new_inputs(trained) -> None:
    assert set(CONTEXT_INPUTS) <= set(trained.ranking.model.feature_keys)
    assert trained.ranking.sampling_rate == 1.0, "impressions are not sampled"


def test_the_new_inputs_change_the_in_process_answer(trained, user) -> None:
    with_inputs = _in_process(trained, user)
    without = _in_process(trained, UserContext(**{**_fields(user), "extra": {}}))
    assert not np.allclose(sorted(c.score for c in with_inputs), sorted(c.score for c in without))


@pytest.mark.parametrize("with_new_inputs", [True, False], ids=["new_client", "client_without_new_inputs"])
def test_served_answers_equal_the_in_process_models(server, trained, user, with_new_inputs) -> None:
    asked = user if with_new_inputs else UserContext(**{**_fields(user), "extra": {}})
    with RecommenderClient(server.grpc_target, timeout=TIMEOUT_S) as client:
        assert_matches(client.recommend(asked, k=K), _in_process(trained, asked))


def test_the_signature_gives_the_new_inputs_one_row_defaults(server, trained) -> None:
    saved_model = saved_model_pb2.SavedModel.FromString(
        (trained.saved_models / contract.RANKING / "1" / "saved_model.pb").read_bytes())
    signature = saved_model.meta_graphs[0].signature_def[contract.SIGNATURE_NAME]
    assert set(signature.inputs) == {spec.name for spec in contract.RANKING_INPUTS}
    defaults = {name: tf.make_ndarray(proto).tolist() for name, proto in signature.defaults.items()}
    assert defaults == {contract.WATCH_HISTORY_TIMES: [[0]], contract.IMPRESSION_HISTORY: [[b""]],
                        contract.LANGUAGE: [b""]}


def test_a_raw_request_without_the_new_inputs_takes_the_signature_defaults(server, trained, user) -> None:
    """Two users (one unknown) in one request: each one-row default is broadcast to the batch."""
    features = {spec.name: np.concatenate([_one_row(spec, getattr(user, spec.name)), _one_row(spec, spec.default)])
                for spec in contract.USER_INPUTS if spec.rank == 1}
    features.update({spec.name: np.array([[*getattr(user, spec.name)], [""] * len(getattr(user, spec.name))],
                                         dtype=object) for spec in contract.USER_INPUTS if spec.rank == 2})
    candidates = np.asarray(trained.data.catalog.item_ids[:6], dtype=object)
    request = {**features, contract.CANDIDATE_IDS: np.stack([candidates, candidates[::-1]])}
    channel, predict, _ = grpc_stubs(server.grpc_target)
    with channel:
        response = predict.Predict(predict_request(contract.RANKING, request), timeout=TIMEOUT_S)
    expected_scores, expected_watch_time = score(trained.ranking, request)  # in process: [B, 1] defaults
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[contract.SCORES]), expected_scores,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs[contract.EXPECTED_WATCH_TIME]), expected_watch_time,
                               rtol=1e-4, atol=1e-6)


def _fields(user: UserContext) -> dict[str, Any]:
    return {spec.name: getattr(user, spec.name) for spec in contract.USER_INPUTS}


def _in_process(trained: Any, user: UserContext) -> list[Expected]:
    """Retrieval top-K, seen items dropped, ranked in process with the user's ranking-only inputs (if any)."""
    features = {spec.name: _one_row(spec, getattr(user, spec.name)) for spec in contract.USER_INPUTS}
    item_ids, retrieval_scores = retrieve(trained.retrieval, features, trained.retrieval_k)
    unseen = [j for j, item in enumerate(item_ids[0]) if item not in set(user.watch_history)]
    candidates = item_ids[0][unseen]
    extra = {spec.name: _one_row(spec, user.extra[spec.name]) for spec in contract.RANKING_CONTEXT_INPUTS
             if spec.name in user.extra}
    scores, watch_time = score(trained.ranking, {**features, **extra, contract.CANDIDATE_IDS: candidates[None, :]})
    order = np.argsort(-scores[0], kind="stable")
    return [Expected(str(candidates[i]), float(scores[0, i]), float(watch_time[0, i]),
                     float(retrieval_scores[0, unseen[i]])) for i in order]


def _one_row(spec: contract.TensorSpec, value: Any) -> np.ndarray:
    dtype = object if spec.dtype == "string" else np.int64
    if spec.rank == 2:
        values = list(value)
        return np.array(values, dtype=dtype).reshape(1, len(values)) if values else np.full((1, 1), spec.default, dtype)
    return np.array([value], dtype=dtype)
