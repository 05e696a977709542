"""The thin recommender client: retrieve K candidates, drop what the user has seen, rank, keep the top k.

    client = RecommenderClient("localhost:8500", timeout=2.0)
    for rec in client.recommend(UserContext(user_id="42", watch_history=["i1", "i7"]), k=10):
        print(rec.item_id, rec.score, rec.expected_watch_time, rec.title)

It talks gRPC to TF Serving or `python -m serving.server` (`tensorflow.serving.PredictionService`)
and never imports TensorFlow: the messages are the vendored `serving._protos` modules.

- Requests are built from each model's `GetModelMetadata` signature (fetched once per model and
  cached), so every input the model requires is sent and optional features take their defaults.
- Every RPC carries a deadline (`timeout`). UNAVAILABLE is retried with exponential backoff and
  jitter (`retries` times); no other error is retried. Failures raise `RecommenderError`
  subclasses: `ModelNotFoundError` (NOT_FOUND), `InvalidRequestError` (INVALID_ARGUMENT or a bad
  feature caught before sending), `ServerUnavailableError`, `DeadlineExceededError`.
- Titles: TF Serving does not serve files, so titles come from the export metadata
  (`item_titles` of `<model>/<version>/assets/export_metadata.json`) when the client is given
  the saved_models folder (`saved_models_dir`), or from a `titles` mapping; otherwise None.
  The same metadata supplies the input defaults (else the serving contract's are used).
- `retrieval_model` may name several models (the shards of a split index): their top-K lists
  are merged by score.
- `AsyncRecommenderClient` is the same over `grpc.aio`.
- TLS: pass `credentials=tls_credentials(ca_file=...)` (a server started with --ssl_config_file);
  without credentials the channel is plain-text (TF Serving's default).

The recommendation steps are written once, as generators that yield the RPCs they need
(`_Call`) and receive the responses; the sync and async clients only differ in how they
run those RPCs.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import json
import math
import pathlib
import random
import sys
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeVar, Union

import grpc
import numpy as np

from recsys_common import contract
from recsys_common.layout import version_directories
from serving._protos import services
from serving._protos.tensorflow.core.framework import tensor_pb2
from serving._protos.tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2
from serving.client_errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    InvalidRequestError,
    ModelNotFoundError,
    RecommenderError,
    ServerUnavailableError,
    UnexpectedResponseError,
    from_rpc_error,
)
from serving.client_requests import (
    CONTRACT_INT64_FEATURES,
    InputSpec,
    ModelSignature,
    build_inputs,
    check_features,
    check_int_range,
    output,
    parse_signature,
    predict_request,
)

__all__ = [
    "AsyncRecommenderClient",
    "DeadlineExceededError",
    "InvalidArgumentError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "Recommendation",
    "RecommenderClient",
    "RecommenderError",
    "ServerUnavailableError",
    "UnexpectedResponseError",
    "UserContext",
    "load_export_metadata",
]

RankBy = Literal["scores", "expected_watch_time"]
UserLike = Union["UserContext", Mapping[str, Any]]
_T = TypeVar("_T")
_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE


@dataclasses.dataclass(frozen=True)
class UserContext:
    """What the client knows about the user at request time (the user inputs of the serving contract).

    Unknown features keep their defaults, which the models treat as "unknown".

    Attributes:
        user_id: the user's id ("" = anonymous).
        watch_history: watched item ids, most recent last; these items are never recommended.
        search_history: search tokens, most recent last.
        gender, occupation, region: demographic and geographic features ("" = unknown).
        age: years or the source's age code (0 = unknown).
        request_time: unix seconds (0 = unknown).
        extra: further inputs of the served signatures, by name.

    Raises:
        InvalidArgumentError: (a ValueError) an `age` or `request_time` that int64, their dtype, cannot hold.
    """

    user_id: str = ""
    watch_history: Sequence[str] = ()
    search_history: Sequence[str] = ()
    gender: str = ""
    occupation: str = ""
    region: str = ""
    age: int = 0
    request_time: int = 0
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        check_int_range("age", self.age)
        check_int_range("request_time", self.request_time)

    def features(self) -> dict[str, Any]:
        """Feature name -> value, as the signatures name them."""
        values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self) if field.name != "extra"}
        return {**values, **self.extra}


@dataclasses.dataclass(frozen=True)
class Recommendation:
    """One recommended item.

    Attributes:
        item_id: the item.
        score: the ranking model's watch probability.
        expected_watch_time: the ranking model's expected watch time (seconds).
        retrieval_score: the candidate generator's score (dot product with the user vector).
        title: the item's title when the client has the export metadata, else None.
    """

    item_id: str
    score: float
    expected_watch_time: float
    retrieval_score: float
    title: str | None = None


@dataclasses.dataclass(frozen=True)
class _Call:
    """One RPC a recommendation step needs: the stub method, the model it is for, the request."""

    method: Literal["Predict", "GetModelMetadata"]
    model: str
    request: Any


_Flow = Generator[list[_Call], list[Any], _T]
_Encoded = dict[InputSpec, tensor_pb2.TensorProto]  # user tensors built for one request, shared by its models


@dataclasses.dataclass(frozen=True)
class _Candidates:
    """Retrieved, unseen candidates per user: ids [B] lists and the retrieval scores; `width` = K."""

    item_ids: list[list[str]]
    scores: list[list[float]]
    width: int


class _RecommenderCore:
    """Configuration, caches and the recommendation steps shared by the sync and async clients."""

    def __init__(
        self,
        target: str,
        *,
        retrieval_target: str | None = None,
        timeout: float = 5.0,
        retries: int = 3,
        initial_backoff: float = 0.05,
        max_backoff: float = 2.0,
        retrieval_model: str | Sequence[str] = contract.RETRIEVAL,
        ranking_model: str = contract.RANKING,
        version_label: str | None = None,
        num_candidates: int | None = None,
        rank_by: RankBy = "scores",
        batch_size: int = 128,
        saved_models_dir: str | pathlib.Path | None = None,
        titles: Mapping[str, str] | None = None,
        seed: int | None = None,
    ) -> None:
        """Args:
        target: "host:port" of the gRPC server.
        retrieval_target: the server of the retrieval model(s) when it is another one (e.g. TF Serving with
            ScaNN beside a stock TF Serving for ranking); None = `target`.
        timeout: deadline of every RPC, in seconds.
        retries: how often an UNAVAILABLE call is retried.
        initial_backoff, max_backoff: the first and the largest wait between retries, in seconds.
        retrieval_model: the candidate generator ("retrieval", "retrieval_bruteforce"), or its shards.
        ranking_model: the ranking model.
        version_label: serve both models at this label ("stable", "canary"); None = latest version.
        num_candidates: how many retrieved candidates to rank (None = all the retrieval model returns).
        rank_by: the ranking output to order by.
        batch_size: the most users per Predict call in recommend_batch.
        saved_models_dir: the saved_models folder, for titles and input defaults from the export metadata.
        titles: item id -> title (added to those of the export metadata).
        seed: seed of the backoff jitter.
        """
        _check_options(timeout, retries, initial_backoff, max_backoff, num_candidates, batch_size, rank_by)
        self.target = target
        self.retrieval_target = retrieval_target or target
        self.timeout = timeout
        self.retries = retries
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.retrieval_models = (retrieval_model,) if isinstance(retrieval_model, str) else tuple(retrieval_model)
        if not self.retrieval_models:
            raise ValueError("retrieval_model: give at least one model name")
        self.ranking_model = ranking_model
        self.version_label = version_label
        self.num_candidates = num_candidates
        self.rank_by = rank_by
        self.batch_size = batch_size
        self._metadata = _export_metadata(saved_models_dir, (*self.retrieval_models, ranking_model))
        self.titles: dict[str, str] = {**_titles(self._metadata.values()), **(titles or {})}
        self._signatures: dict[str, ModelSignature] = {}
        self._random = random.Random(seed)

    @property
    def models(self) -> tuple[str, ...]:
        return (*self.retrieval_models, self.ranking_model)

    def _target_of(self, model: str) -> str:
        return self.retrieval_target if model in self.retrieval_models else self.target

    def _backoff(self, attempt: int) -> float:
        """Seconds to wait before retry `attempt` (0-based): exponential, capped, with jitter in [50%, 100%]."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2**attempt)
        return ceiling * (0.5 + 0.5 * self._random.random())

    def _recommend_flow(self, users: Sequence[Mapping[str, Any]], k: int) -> _Flow[list[list[Recommendation]]]:
        """Recommends for rows that `check_arguments` has passed (`_one_user`, `_chunks`)."""
        yield from self._signatures_flow()
        check_features(users, [self._signatures[model] for model in self.models])
        encoded: _Encoded = {}
        candidates = yield from self._retrieve_flow(users, encoded)
        if not any(candidates.item_ids):
            return [[] for _ in users]
        return (yield from self._rank_flow(users, candidates, k, encoded))

    def _signatures_flow(self) -> _Flow[None]:
        missing = [model for model in self.models if model not in self._signatures]
        if not missing:
            return
        responses = yield [_Call("GetModelMetadata", model, self._metadata_request(model)) for model in missing]
        for model, response in zip(missing, responses):
            self._signatures[model] = parse_signature(model, response, self._input_defaults(model))

    def _retrieve_flow(self, users: Sequence[Mapping[str, Any]], encoded: _Encoded) -> _Flow[_Candidates]:
        calls = [
            _Call("Predict", model, predict_request(model, build_inputs(self._signatures[model], users, None, encoded),
                                                    self.version_label))
            for model in self.retrieval_models
        ]
        responses = yield calls
        shard_ids = [output(r, c.model, contract.ITEM_IDS, len(users)) for c, r in zip(calls, responses)]
        shard_scores = [output(r, c.model, contract.SCORES, len(users)) for c, r in zip(calls, responses)]
        # Each shard returns its top min(K, its size): the merged top-K is as long as the longest list.
        width = self.num_candidates or max(ids.shape[1] for ids in shard_ids)
        return _unseen_candidates(np.concatenate(shard_ids, axis=1), np.concatenate(shard_scores, axis=1), users,
                                  width)

    def _rank_flow(
        self, users: Sequence[Mapping[str, Any]], candidates: _Candidates, k: int, encoded: _Encoded
    ) -> _Flow[list[list[Recommendation]]]:
        candidate_ids = np.full((len(users), max(candidates.width, 1)), "", dtype=object)
        for row, ids in enumerate(candidates.item_ids):
            candidate_ids[row, : len(ids)] = ids
        inputs = build_inputs(self._signatures[self.ranking_model], users, {contract.CANDIDATE_IDS: candidate_ids},
                              encoded)
        (response,) = yield [
            _Call("Predict", self.ranking_model, predict_request(self.ranking_model, inputs, self.version_label))
        ]
        scores = output(response, self.ranking_model, contract.SCORES, len(users))
        watch_time = output(response, self.ranking_model, contract.EXPECTED_WATCH_TIME, len(users))
        order_by = scores if self.rank_by == contract.SCORES else watch_time
        return [
            self._top_k(ids, retrieval, scores[row], watch_time[row], order_by[row], k)
            for row, (ids, retrieval) in enumerate(zip(candidates.item_ids, candidates.scores))
        ]

    def _top_k(
        self,
        item_ids: list[str],
        retrieval_scores: list[float],
        scores: np.ndarray,
        watch_time: np.ndarray,
        order_by: np.ndarray,
        k: int,
    ) -> list[Recommendation]:
        count = len(item_ids)
        if scores.shape[0] < count:
            raise UnexpectedResponseError(
                f"model {self.ranking_model!r} scored {scores.shape[0]} of {count} candidates", model=self.ranking_model
            )
        order = np.argsort(-order_by[:count], kind="stable")[:k]
        return [
            Recommendation(item_ids[i], float(scores[i]), float(watch_time[i]), retrieval_scores[i],
                           self.titles.get(item_ids[i]))
            for i in order
        ]

    def _metadata_request(self, model: str) -> get_model_metadata_pb2.GetModelMetadataRequest:
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=[contract.SIGNATURE_DEF_FIELD])
        request.model_spec.name = model
        if self.version_label:
            request.model_spec.version_label = self.version_label
        return request

    def _input_defaults(self, model: str) -> dict[str, Any]:
        inputs = self._metadata.get(model, {}).get(contract.METADATA_INPUTS, {})
        return {name: spec["default"] for name, spec in inputs.items() if isinstance(spec, dict) and "default" in spec}

    def _one_user(self, user: UserLike | None, features: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
        rows = [_features(user, features)]
        check_arguments(rows, k)
        return rows

    def _chunks(self, users: Sequence[UserLike], k: int) -> list[list[dict[str, Any]]]:
        rows = [_features(user) for user in users]
        check_arguments(rows, k)  # every chunk, before the first chunk's RPCs
        return [rows[start: start + self.batch_size] for start in range(0, len(rows), self.batch_size)]

    def _status_request(self, model: str) -> get_model_status_pb2.GetModelStatusRequest:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model
        return request


class RecommenderClient(_RecommenderCore):
    """Blocking client; safe to share between threads. Close it (or use `with`) to release the channel."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None, **options: Any) -> None:
        """Args: see `_RecommenderCore`; credentials: TLS channel credentials (`tls_credentials`), None for
        a plain-text channel."""
        super().__init__(target, **options)
        self._channels = {t: grpc.secure_channel(t, credentials, options=_channel_options()) if credentials
                          else grpc.insecure_channel(t, options=_channel_options())
                          for t in dict.fromkeys([self.target, self.retrieval_target])}
        self._prediction = {t: services.PredictionServiceStub(c) for t, c in self._channels.items()}
        self._model_service = {t: services.ModelServiceStub(c) for t, c in self._channels.items()}
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=len(self.retrieval_models),
                                                           thread_name_prefix="recommender-rpc")

    def __enter__(self) -> RecommenderClient:  # noqa: PYI034 (final class)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        for channel in self._channels.values():
            channel.close()

    def recommend(self, user: UserLike | None = None, k: int = 10, **features: Any) -> list[Recommendation]:
        """The top `k` unseen items for one user, best first.

        Args:
            user: a UserContext or a mapping of feature name -> value; `features` are added to it.
            k: how many items to return (fewer if fewer unseen candidates were retrieved).
        """
        return self._run(self._recommend_flow(self._one_user(user, features, k), k))[0]

    def recommend_batch(self, users: Sequence[UserLike], k: int = 10) -> list[list[Recommendation]]:
        """`recommend` for many users, `batch_size` users per Predict call; results in the users' order."""
        results: list[list[Recommendation]] = []
        for chunk in self._chunks(users, k):
            results.extend(self._run(self._recommend_flow(chunk, k)))
        return results

    def signature(self, model: str) -> ModelSignature:
        """The served signature of `model` (fetched once, then cached)."""
        if model not in self.models:
            raise ValueError(f"{model!r} is not one of this client's models {self.models}")
        self._run(self._signatures_flow())
        return self._signatures[model]

    def wait_until_ready(self, timeout: float = 30.0, poll_interval: float = 0.1) -> None:
        """Blocks until every model has an AVAILABLE version.

        Raises:
            ServerUnavailableError: not ready within `timeout` seconds (the message says which model).
        """
        deadline = time.monotonic() + timeout
        for model in self.models:
            while not self._is_available(model):
                if time.monotonic() > deadline:
                    raise ServerUnavailableError(
                        f"model {model!r} not AVAILABLE at {self._target_of(model)} after {timeout}s", model=model
                    )
                time.sleep(poll_interval)

    def _is_available(self, model: str) -> bool:
        try:
            status = self._model_service[self._target_of(model)].GetModelStatus(
                self._status_request(model), timeout=self.timeout
            )
        except grpc.RpcError:
            return False
        return any(version.state == _AVAILABLE for version in status.model_version_status)

    def _run(self, flow: _Flow[_T]) -> _T:
        try:
            calls = next(flow)
            while True:
                calls = flow.send(self._invoke_all(calls))
        except StopIteration as done:
            return done.value

    def _invoke_all(self, calls: Sequence[_Call]) -> list[Any]:
        """The calls' responses; Predict calls to several models (the shards of a split index) run concurrently."""
        if len(calls) > 1 and all(call.method == "Predict" for call in calls):
            return list(self._pool.map(self._invoke, calls))
        return [self._invoke(call) for call in calls]

    def _invoke(self, call: _Call) -> Any:
        method = getattr(self._prediction[self._target_of(call.model)], call.method)
        for attempt in range(self.retries + 1):
            try:
                return method(call.request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise from_rpc_error(error, model=call.model, method=call.method, attempts=attempt + 1) from error
            time.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")


class AsyncRecommenderClient(_RecommenderCore):
    """`RecommenderClient` over grpc.aio; create and use it inside a running event loop."""

    def __init__(self, target: str, *, credentials: grpc.ChannelCredentials | None = None, **options: Any) -> None:
        """Args: as `RecommenderClient`."""
        super().__init__(target, **options)
        self._channels = {t: grpc.aio.secure_channel(t, credentials, options=_channel_options()) if credentials
                          else grpc.aio.insecure_channel(t, options=_channel_options())
                          for t in dict.fromkeys([self.target, self.retrieval_target])}
        self._prediction = {t: services.PredictionServiceStub(c) for t, c in self._channels.items()}

    async def __aenter__(self) -> AsyncRecommenderClient:  # noqa: PYI034 (final class)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def recommend(self, user: UserLike | None = None, k: int = 10, **features: Any) -> list[Recommendation]:
        """See `RecommenderClient.recommend`."""
        return (await self._run(self._recommend_flow(self._one_user(user, features, k), k)))[0]

    async def recommend_batch(self, users: Sequence[UserLike], k: int = 10) -> list[list[Recommendation]]:
        """See `RecommenderClient.recommend_batch`; the chunks run concurrently."""
        checked = self._chunks(users, k)
        await self._run(self._signatures_flow())
        chunks = await asyncio.gather(*(self._run(self._recommend_flow(chunk, k)) for chunk in checked))
        return [result for chunk in chunks for result in chunk]

    async def _run(self, flow: _Flow[_T]) -> _T:
        try:
            calls = next(flow)
            while True:
                calls = flow.send(list(await asyncio.gather(*(self._invoke(call) for call in calls))))
        except StopIteration as done:
            return done.value

    async def _invoke(self, call: _Call) -> Any:
        method = getattr(self._prediction[self._target_of(call.model)], call.method)
        for attempt in range(self.retries + 1):
            try:
                return await method(call.request, timeout=self.timeout)
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == self.retries:
                    raise from_rpc_error(error, model=call.model, method=call.method, attempts=attempt + 1) from error
            await asyncio.sleep(self._backoff(attempt))
        raise AssertionError("unreachable")


def load_export_metadata(path: str | pathlib.Path) -> dict[str, Any]:
    """Reads export metadata without TensorFlow: from a metadata JSON file, a version folder or a model folder.

    For a model folder, the newest version's metadata is read.

    Raises:
        FileNotFoundError: no metadata there.
        TypeError: the file does not hold a JSON object.
    """
    path = pathlib.Path(path)
    if path.is_dir():
        versions = version_directories(path)
        version_dir = versions[max(versions)] if versions and not (path / contract.ASSETS_DIR).is_dir() else path
        path = version_dir / contract.ASSETS_DIR / contract.METADATA_ASSET
    if not path.is_file():
        raise FileNotFoundError(f"no export metadata at {path}")
    loaded = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(loaded, dict):
        raise TypeError(f"{path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def _export_metadata(saved_models_dir: str | pathlib.Path | None, models: Iterable[str]) -> dict[str, dict[str, Any]]:
    if saved_models_dir is None:
        return {}
    root = pathlib.Path(saved_models_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"saved_models_dir {root} is not a folder")
    return {model: load_export_metadata(root / model) for model in models if (root / model).is_dir()}


def _titles(metadata: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    titles: dict[str, str] = {}
    for entry in metadata:
        found = entry.get(contract.METADATA_ITEM_TITLES) or {}
        titles.update({str(item): str(title) for item, title in found.items() if title})
    return titles


def _features(user: UserLike | None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    if isinstance(user, UserContext):
        base = user.features()
    elif user is None or isinstance(user, Mapping):
        base = dict(user or {})
    else:
        raise InvalidRequestError(f"user must be a UserContext or a mapping of features, got {type(user).__name__}")
    return {**base, **(extra or {})}


def check_arguments(users: Sequence[Mapping[str, Any]], k: Any) -> None:
    """Refuses, before any RPC, a `k` that is not an int >= 1, feature text that UTF-8 cannot encode and
    integers of the contract's int64 features (age, request_time, watch_history_times) beyond int64.

    Raises:
        InvalidArgumentError: naming `k`, or the feature, the user's row and the offending string or integer.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise InvalidArgumentError(f"k must be an int >= 1, got {k!r} ({type(k).__name__})", argument="k")
    for row, user in enumerate(users):
        for name, value in user.items():
            texts = [value] if isinstance(value, str) else value if isinstance(value, (list, tuple, np.ndarray)) else ()
            for text in (text for text in texts if isinstance(text, str)):
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError as error:
                    raise InvalidArgumentError(
                        f"feature {name!r} of user {row}: {text!r} is not valid Unicode text ({error.reason} at "
                        f"index {error.start}); strings must be encodable as UTF-8", argument=name) from None
        for name in sorted(CONTRACT_INT64_FEATURES & user.keys()):
            value = user[name]
            for item in value if isinstance(value, (list, tuple, np.ndarray)) else [value]:
                check_int_range(name, item, where=f" of user {row}")


def _unseen_candidates(
    item_ids: np.ndarray, scores: np.ndarray, users: Sequence[Mapping[str, Any]], width: int
) -> _Candidates:
    """Per user: candidates by retrieval score (merging shards), without seen items, pads or duplicates."""
    kept_ids, kept_scores = [], []
    for row, user in enumerate(users):
        seen = {str(item) for item in (user.get(contract.WATCH_HISTORY) or ())}
        order = np.argsort(-scores[row], kind="stable")[:width]
        ids: list[str] = []
        row_scores: list[float] = []
        for index in order:
            item = str(item_ids[row, index])
            if item and item not in seen:
                seen.add(item)
                ids.append(item)
                row_scores.append(float(scores[row, index]))
        kept_ids.append(ids)
        kept_scores.append(row_scores)
    return _Candidates(kept_ids, kept_scores, width)


def tls_credentials(ca_file: str | pathlib.Path | None = None, cert_file: str | pathlib.Path | None = None,
                    key_file: str | pathlib.Path | None = None) -> grpc.ChannelCredentials:
    """TLS channel credentials from PEM files.

    Args:
        ca_file: the CA certificate(s) the server's certificate must chain to; None uses the system's roots.
        cert_file, key_file: this client's certificate and key, for a server that verifies clients
            (SSLConfig client_verify); both or neither.

    Raises:
        ValueError: only one of cert_file / key_file, or a file that cannot be read (named).
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("give both a client certificate and its key for mutual TLS, or neither")

    def read(path: str | pathlib.Path | None) -> bytes | None:
        if path is None:
            return None
        try:
            return pathlib.Path(path).read_bytes()
        except OSError as error:
            raise ValueError(f"cannot read TLS file {path}: {error.strerror}") from None

    return grpc.ssl_channel_credentials(root_certificates=read(ca_file), private_key=read(key_file),
                                        certificate_chain=read(cert_file))


def _channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", _MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", _MAX_MESSAGE_BYTES)]


def _check_options(
    timeout: float, retries: int, initial_backoff: float, max_backoff: float, num_candidates: int | None,
    batch_size: int, rank_by: str,
) -> None:
    if not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout}")
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    if not 0 <= initial_backoff <= max_backoff < math.inf:
        raise ValueError(f"need 0 <= initial_backoff <= max_backoff, finite, got {initial_backoff}, {max_backoff}")
    if num_candidates is not None and num_candidates < 1:
        raise ValueError(f"num_candidates must be >= 1 or None, got {num_candidates}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if rank_by not in (contract.SCORES, contract.EXPECTED_WATCH_TIME):
        raise ValueError(f"rank_by must be {contract.SCORES!r} or {contract.EXPECTED_WATCH_TIME!r}, got {rank_by!r}")


def format_table(recommendations: Sequence[Recommendation]) -> str:
    """A plain-text table of recommendations, one row per item."""
    header = ("rank", "item_id", "score", "watch_time", "retrieval", "title")
    rows = [
        (str(rank), rec.item_id, f"{rec.score:.4f}", f"{rec.expected_watch_time:.1f}", f"{rec.retrieval_score:.3f}",
         rec.title or "")
        for rank, rec in enumerate(recommendations, start=1)
    ]
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(len(header))]
    right = {0, 2, 3, 4}
    lines = [
        "  ".join(cell.rjust(w) if i in right else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
        for row in [header, *rows]
    ]
    return "\n".join(line.rstrip() for line in [lines[0], "  ".join("-" * w for w in widths), *lines[1:]])


def _int64(text: str) -> int:
    """argparse type of --age and --request-time: an int that int64, their dtype in the serving contract, can hold."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not contract.INT64_MIN <= value <= contract.INT64_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range: it must be an integer in [{contract.INT64_MIN}, "
                                         f"{contract.INT64_MAX}] (int64)")
    return value


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m serving.client", description="Recommend items for one user.")
    parser.add_argument("--target", default="localhost:8500", help="gRPC host:port of the model server")
    parser.add_argument("--retrieval-target", default=None,
                        help="gRPC host:port serving the retrieval model, if not --target (see serving/DEPLOY.md)")
    parser.add_argument("--user-id", default="", help="the user's id")
    parser.add_argument("-k", type=int, default=10, help="how many items to show")
    parser.add_argument("--watch-history", default="", help="comma-separated watched item ids, most recent last")
    parser.add_argument("--search-history", default="", help="space-separated search tokens")
    parser.add_argument("--gender", default="")
    parser.add_argument("--occupation", default="")
    parser.add_argument("--region", default="")
    parser.add_argument("--age", type=_int64, default=0)
    parser.add_argument("--request-time", type=_int64, default=0, help="unix seconds (0 = unknown)")
    parser.add_argument("--retrieval-model", default=contract.RETRIEVAL,
                        help=f"candidate generator, e.g. {contract.RETRIEVAL_BRUTEFORCE} on stock TF Serving; "
                        f"comma-separated for the shards of a split index ({contract.shard_model_name(0)},...)")
    parser.add_argument("--ranking-model", default=contract.RANKING)
    parser.add_argument("--version-label", default=None, help="e.g. stable or canary")
    parser.add_argument("--saved-models", default=None, help="saved_models folder, for titles")
    parser.add_argument("--timeout", type=float, default=5.0, help="deadline of each RPC in seconds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--tls", action="store_true", help="connect over TLS (a server with --ssl_config_file)")
    parser.add_argument("--tls-ca-file", default=None, help="PEM CA certificate of the server (default: system roots)")
    parser.add_argument("--tls-cert-file", default=None, help="PEM client certificate, for mutual TLS")
    parser.add_argument("--tls-key-file", default=None, help="PEM client key, for mutual TLS")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI: prints the recommendations as a table (or JSON); exit status 1 with a message on failure."""
    args = _parse_args(argv)
    user = UserContext(
        user_id=args.user_id,
        watch_history=[item for item in args.watch_history.split(",") if item],
        search_history=args.search_history.split(),
        gender=args.gender, occupation=args.occupation, region=args.region,
        age=args.age, request_time=args.request_time,
    )
    try:
        credentials = tls_credentials(args.tls_ca_file, args.tls_cert_file, args.tls_key_file) \
            if args.tls or args.tls_ca_file or args.tls_cert_file or args.tls_key_file else None
        with RecommenderClient(args.target, credentials=credentials, retrieval_target=args.retrieval_target,
                               timeout=args.timeout,
                               retrieval_model=[m for m in args.retrieval_model.split(",") if m],
                               ranking_model=args.ranking_model,
                               version_label=args.version_label, saved_models_dir=args.saved_models) as client:
            recommendations = client.recommend(user, k=args.k)
    except (RecommenderError, OSError, ValueError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dataclasses.asdict(rec) for rec in recommendations], indent=1))
    else:
        print(format_table(recommendations))
    return 0


if __name__ == "__main__":
    sys.exit(main())
