"""The YouTube world's models (impressions, channels, languages) served by `python -m serving.server`.

The ranker of this module trains on impressions and reads the ranking-only inputs (watch history
times, impression history, language). Served through the client with those inputs, it answers as
in process; a client that sends none of them (one built for the signature before they existed)
is still answered, as in process with their defaults.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recsys_common import contract
from serving.client import RecommenderClient, UserContext
from tests.integration.test_trained_models_served import TIMEOUT_S, Expected, K, _python, assert_matches
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
