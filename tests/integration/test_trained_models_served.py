"""Trained models, exported and served by `python -m serving.server`, answer like the in-process Keras models.

The reference is computed here, in this process, from the trained `RetrievalResult` and
`RankingResult` (not from the SavedModels): exact retrieval top-K (`trainer.retrieval.retrieve`),
the user's watched items dropped, the rest ranked by `trainer.ranking.train.score`, top k.
The client's answer through gRPC must name the same items in the same order (two items may
swap only where their in-process scores tie within `TIE`), with the same scores, expected
watch times and retrieval scores. The in-process requests are built independently of the
client: histories unpadded (or [1, 0] when empty), where the client left-pads with "".
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from recsys_common import contract
from serving.client import AsyncRecommenderClient, Recommendation, RecommenderClient, UserContext
from trainer.export.layout import list_versions
from trainer.ranking.train import score
from trainer.retrieval import retrieve

K = 10
TIE = 1e-5  # in-process watch probabilities this close may come back in either order
TIMEOUT_S = 30.0
RETRIEVAL_MODELS = (contract.RETRIEVAL, contract.RETRIEVAL_BRUTEFORCE)
USER_CASES = ("known_user_with_history", "unknown_user", "known_user_empty_history", "anonymous",
              "search_history_only")


@dataclasses.dataclass(frozen=True)
class Expected:
    """One candidate of the in-process pipeline, with the numbers the served one must reproduce."""

    item_id: str
    score: float
    expected_watch_time: float
    retrieval_score: float


@pytest.fixture(scope="module")
def users(trained) -> dict[str, UserContext]:
    """The request contexts of USER_CASES, taken from the test period of the trained data."""
    examples = trained.data.test_examples
    rows = range(len(examples[contract.USER_ID]))
    full = next(row for row in rows if _listed(examples[contract.WATCH_HISTORY][row])
                and _listed(examples[contract.SEARCH_HISTORY][row]) and examples[contract.GENDER][row]
                and examples[contract.AGE][row] > 0)
    other = next(row for row in rows if examples[contract.USER_ID][row] != examples[contract.USER_ID][full]
                 and len(_listed(examples[contract.SEARCH_HISTORY][row])) >= 2)
    known = UserContext(**{spec.name: _python(examples[spec.name][full]) for spec in contract.USER_INPUTS})
    assert known.user_id in set(trained.data.vocab.user_ids), "the known user must be in the training vocabulary"
    return {
        "known_user_with_history": known,
        "unknown_user": UserContext(user_id="stranger-never-seen", region=known.region,
                                    watch_history=[*known.watch_history[-3:], "not-an-item"]),
        "known_user_empty_history": UserContext(user_id=known.user_id),
        "anonymous": UserContext(),
        "search_history_only": UserContext(
            user_id=str(examples[contract.USER_ID][other]),
            search_history=[*_listed(examples[contract.SEARCH_HISTORY][other]), "zzz-unknown-token"]),
    }


@pytest.fixture(scope="module")
def expected(trained, users) -> dict[str, list[Expected]]:
    """Every user's unseen retrieved candidates, ranked in process (best first)."""
    return {name: in_process_ranking(trained, user) for name, user in users.items()}


def in_process_ranking(trained: Any, user: UserContext) -> list[Expected]:
    """Retrieval top-K with the Keras towers, seen items dropped, ranked by the Keras ranking model."""
    features = _request(user)
    item_ids, retrieval_scores = retrieve(trained.retrieval, features, trained.retrieval_k)
    seen = set(user.watch_history)
    unseen = [j for j, item in enumerate(item_ids[0]) if item not in seen]
    candidates = item_ids[0][unseen]
    scores, watch_time = score(trained.ranking, {**features, contract.CANDIDATE_IDS: candidates[None, :]})
    order = np.argsort(-scores[0], kind="stable")
    return [Expected(str(candidates[i]), float(scores[0, i]), float(watch_time[0, i]),
                     float(retrieval_scores[0, unseen[i]])) for i in order]


def assert_matches(served: Sequence[Recommendation], expected: Sequence[Expected], k: int = K) -> None:
    """`served` is the top k of `expected`, up to swaps between in-process ties, with the same numbers."""
    assert len(served) == min(k, len(expected))
    assert len({rec.item_id for rec in served}) == len(served), "an item came back twice"
    by_id = {candidate.item_id: candidate for candidate in expected}
    for position, rec in enumerate(served):
        assert rec.item_id in by_id, f"{rec.item_id!r} is not an unseen in-process candidate"
        mine = by_id[rec.item_id]
        assert abs(mine.score - expected[position].score) <= TIE, (
            f"position {position}: served {rec.item_id!r} (in-process score {mine.score}), in process "
            f"{expected[position].item_id!r} ({expected[position].score})")
        assert rec.score == pytest.approx(mine.score, abs=1e-5)
        assert rec.expected_watch_time == pytest.approx(mine.expected_watch_time, rel=1e-4)
        assert rec.retrieval_score == pytest.approx(mine.retrieval_score, rel=1e-4, abs=1e-4)


def test_the_reference_is_not_degenerate(expected):
    """Guards the comparison itself: real candidate lists whose top k is told apart by more than ties."""
    for name, ranked in expected.items():
        assert len(ranked) >= K, name
        top = np.array([candidate.score for candidate in ranked[:K + 1]])
        assert np.all(np.diff(top) <= 0), name
        assert top[0] - top[-1] > 100 * TIE, f"{name}: the in-process scores barely differ: {top}"
    assert len({tuple(c.item_id for c in ranked[:K]) for ranked in expected.values()}) > 1, \
        "every user gets the same items"


@pytest.mark.parametrize("left, right", [(2, 0), (0, 3), (1, 4)], ids=["left", "right", "both"])
def test_history_pads_change_no_answer_in_process(trained, users, left, right):
    """The client pads histories on the left; TF Serving's batching pads concurrent requests on the right."""
    user = users["known_user_with_history"]
    plain = _request(user)
    padded = dict(plain)
    for name in (contract.WATCH_HISTORY, contract.SEARCH_HISTORY):
        padded[name] = np.pad(plain[name], [(0, 0), (left, right)], constant_values="")
    candidates = {contract.CANDIDATE_IDS: np.array([[str(i) for i in trained.retrieval.item_ids[:20]]], dtype=object)}
    plain_ids, plain_scores = retrieve(trained.retrieval, plain, K)
    padded_ids, padded_scores = retrieve(trained.retrieval, padded, K)
    np.testing.assert_array_equal(padded_ids, plain_ids)
    np.testing.assert_allclose(padded_scores, plain_scores, rtol=1e-6, atol=1e-6)
    for plain_output, padded_output in zip(score(trained.ranking, {**plain, **candidates}),
                                           score(trained.ranking, {**padded, **candidates})):
        np.testing.assert_allclose(padded_output, plain_output, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("retrieval_model", RETRIEVAL_MODELS)
@pytest.mark.parametrize("case", USER_CASES)
def test_served_recommendations_equal_the_in_process_models(server, users, expected, case, retrieval_model):
    with RecommenderClient(server.grpc_target, retrieval_model=retrieval_model, timeout=TIMEOUT_S) as client:
        assert_matches(client.recommend(users[case], k=K), expected[case])


@pytest.mark.parametrize("retrieval_model", RETRIEVAL_MODELS)
def test_async_client_gives_the_same_answers(server, users, expected, retrieval_model):
    async def ask() -> tuple[list[list[Recommendation]], list[list[Recommendation]]]:
        async with AsyncRecommenderClient(server.grpc_target, retrieval_model=retrieval_model,
                                          timeout=TIMEOUT_S) as client:
            singles = await asyncio.gather(*(client.recommend(users[case], k=K) for case in USER_CASES))
            batch = await client.recommend_batch([users[case] for case in USER_CASES], k=K)
        return list(singles), batch

    singles, batch = asyncio.run(ask())
    for case, single, batched in zip(USER_CASES, singles, batch):
        assert_matches(single, expected[case])
        assert_matches(batched, expected[case])


@pytest.mark.parametrize("batch_size", [2, 64])
def test_recommend_batch_equals_single_calls(server, users, expected, batch_size):
    with RecommenderClient(server.grpc_target, timeout=TIMEOUT_S, batch_size=batch_size) as client:
        batch = client.recommend_batch([users[case] for case in USER_CASES], k=K)
        singles = [client.recommend(users[case], k=K) for case in USER_CASES]
    assert len(batch) == len(USER_CASES)
    for case, batched, single in zip(USER_CASES, batch, singles):
        assert_matches(batched, expected[case])
        for from_batch, alone in zip(batched, single, strict=True):
            assert from_batch.item_id == alone.item_id or abs(from_batch.score - alone.score) <= TIE
            assert from_batch.score == pytest.approx(alone.score, abs=1e-5)


def test_titles_come_from_the_export_metadata(server, trained, users):
    titles = dict(zip(trained.data.catalog.item_ids, trained.data.catalog.titles))
    assert all(titles.values()), "synthetic items all have titles"
    with RecommenderClient(server.grpc_target, timeout=TIMEOUT_S, saved_models_dir=trained.saved_models) as client:
        recommendations = client.recommend(users["known_user_with_history"], k=K)
    assert recommendations
    assert [rec.title for rec in recommendations] == [titles[rec.item_id] for rec in recommendations]
    with RecommenderClient(server.grpc_target, timeout=TIMEOUT_S) as client:
        assert {rec.title for rec in client.recommend(users["known_user_with_history"], k=K)} == {None}


def test_a_second_export_is_served_as_version_2(server, trained, users, expected):
    first = {name: list_versions(trained.saved_models / name) for name in contract.MODEL_NAMES}
    exports = trained.export()
    for name in contract.MODEL_NAMES:
        assert int(exports[name].name) == max(first[name]) + 1, name
        assert all((trained.saved_models / name / str(v)).is_dir() for v in first[name]), "a version was replaced"
    newest = max(int(path.name) for path in exports.values())
    for name in contract.MODEL_NAMES:
        server.wait_until(name, lambda versions: versions.get(newest, {}).get("state") == "AVAILABLE",
                          timeout=120, what=f"version {newest} AVAILABLE")
        _wait_for_label(server, name, "canary", newest)
    for label in (None, "canary", "stable"):
        with RecommenderClient(server.grpc_target, timeout=TIMEOUT_S, version_label=label) as client:
            for case in USER_CASES:
                assert_matches(client.recommend(users[case], k=K), expected[case])


def _wait_for_label(server: Any, name: str, label: str, version: int) -> None:
    """Until `label` of `name` resolves to `version` (the server rereads models.config on its poll)."""
    def labelled(_: Mapping[int, Any]) -> bool:
        status, body = server.get_json(f"/v1/models/{name}/labels/{label}")
        return status == 200 and [int(v["version"]) for v in body.get("model_version_status", [])] == [version]

    server.wait_until(name, labelled, timeout=60, what=f"label {label} -> version {version}")


def _request(user: UserContext) -> dict[str, np.ndarray]:
    """The user as a one-row request of contract inputs; histories as given, without pads."""
    request: dict[str, np.ndarray] = {}
    for spec in contract.USER_INPUTS:
        value = getattr(user, spec.name)
        if spec.rank == 2:
            request[spec.name] = np.array(list(value), dtype=object).reshape(1, len(value))
        else:
            request[spec.name] = np.array([value], dtype=object if spec.dtype == "string" else np.int64)
    return request


def _listed(history: np.ndarray) -> list[str]:
    return [str(item) for item in history if item]


def _python(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return _listed(value)
    return int(value) if isinstance(value, np.integer) else str(value)
