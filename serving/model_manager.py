"""Which versions are served: file-system polling, loading, hot swap, unloading and model status.

Follows TF Serving's availability-preserving policy: a new version is loaded (and warmed up)
while the old one keeps serving; only once a wanted version is AVAILABLE are the unwanted
ones unloaded, and each unload waits for the requests that still hold it. A version that
fails to load is shown in the status (state END with the error) and never replaces the
version being served. Requests hold a version through `acquire`, so a swap never fails one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import grpc
from tensorflow_serving.apis import get_model_status_pb2

from recsys_common.layout import version_directories
from serving.errors import ServingError, invalid_argument, not_found, servable_not_found
from serving.model_config import ModelSettings
from serving.monitoring import Metrics
from serving.session_model import SessionModel

LOG = logging.getLogger(__name__)
State = get_model_status_pb2.ModelVersionStatus.State
Loader = Callable[[Path], SessionModel]


@dataclasses.dataclass
class VersionRecord:
    """One version of a model as the manager sees it.

    Attributes:
        version: the version number (its directory name).
        path: the version directory.
        state: START, LOADING, AVAILABLE, UNLOADING or END (ModelVersionStatus.State).
        error: why the last load failed (None if it did not).
        model: the loaded model while LOADING finished and not yet unloaded.
        in_flight: requests currently holding it.
        attempts: load attempts so far.
        retry_at: monotonic time of the next load attempt after a failure.
    """

    version: int
    path: Path
    state: int = State.START
    error: ServingError | None = None
    model: SessionModel | None = None
    in_flight: int = 0
    attempts: int = 0
    retry_at: float = 0.0


@dataclasses.dataclass(frozen=True)
class Servable:
    """A version held for the duration of one request."""

    name: str
    version: int
    model: SessionModel


@dataclasses.dataclass(frozen=True)
class LoadPolicy:
    """How versions are loaded.

    Attributes:
        max_retries: further attempts after a failed load (TF Serving's --max_num_load_retries).
        retry_interval_s: the wait between attempts.
        unload_timeout_s: how long an unload waits for in-flight requests before closing anyway.
    """

    max_retries: int = 5
    retry_interval_s: float = 60.0
    unload_timeout_s: float = 60.0


class ModelManager:
    """Serves the versions of a set of models that their version policies ask for."""

    def __init__(self, models: Sequence[ModelSettings], loader: Loader, poll_seconds: float = 1.0,
                 policy: LoadPolicy | None = None, metrics: Metrics | None = None) -> None:
        self._settings = {model.name: model for model in models}
        self._versions: dict[str, dict[int, VersionRecord]] = {model.name: {} for model in models}
        self._loader = loader
        self._poll_seconds = poll_seconds
        self._policy = policy or LoadPolicy()
        self._metrics = metrics
        self._changed = threading.Condition()
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reported_empty: set[str] = set()

    def start(self) -> None:
        """Loads what the policies ask for now, then keeps polling in the background (if poll_seconds > 0)."""
        self.poll_once()
        if self._poll_seconds > 0:
            self._thread = threading.Thread(target=self._poll_loop, name="model-manager", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stops polling and unloads every version."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._poll_lock:
            for name in list(self._versions):
                for record in list(self._versions[name].values()):
                    self._unload(name, record)

    def _poll_loop(self) -> None:
        while not self._stop.wait(self._poll_seconds):
            try:
                self.poll_once()
            except Exception:  # the poller must outlive any one bad model directory
                LOG.exception("Polling the model directories failed")

    def reload(self, models: Sequence[ModelSettings]) -> None:
        """Switches to a new model list (config file change or ReloadConfig); removed models are unloaded."""
        with self._poll_lock:
            with self._changed:
                removed = [name for name in self._settings if name not in {m.name for m in models}]
                self._settings = {model.name: model for model in models}
                for model in models:
                    self._versions.setdefault(model.name, {})
            for name in removed:
                for record in list(self._versions.get(name, {}).values()):
                    self._unload(name, record)
                with self._changed:
                    self._versions.pop(name, None)
        self.poll_once()

    def poll_once(self) -> None:
        """One pass over every model: load wanted versions, then unload unwanted ones."""
        with self._poll_lock:
            with self._changed:
                settings = list(self._settings.values())
            for model in settings:
                if self._stop.is_set():
                    return
                self._poll_model(model)

    def _poll_model(self, model: ModelSettings) -> None:
        on_disk = version_directories(model.base_path)
        if not on_disk and model.name not in self._reported_empty:
            LOG.warning("No versions of servable %s found under base path %s", model.name, model.base_path)
            self._reported_empty.add(model.name)
        elif on_disk:
            self._reported_empty.discard(model.name)
        wanted = model.wanted_versions(on_disk)
        for version in sorted(wanted, reverse=True):
            self._maybe_load(model.name, version, on_disk[version])
        with self._changed:
            records = dict(self._versions[model.name])
        if not any(records[v].state == State.AVAILABLE for v in wanted if v in records):
            return  # availability first: keep what serves until a wanted version does
        for version, record in records.items():
            if version not in wanted and record.state == State.AVAILABLE:
                self._unload(model.name, record)

    def _maybe_load(self, name: str, version: int, path: Path) -> None:
        with self._changed:
            record = self._versions[name].setdefault(version, VersionRecord(version, path))
            if record.state in (State.AVAILABLE, State.LOADING, State.UNLOADING):
                return
            if record.error is None:
                record.attempts = 0  # a version unloaded by the policy that is wanted again
            elif record.attempts > self._policy.max_retries or time.monotonic() < record.retry_at:
                return
            record.state = State.LOADING
            record.attempts += 1
        LOG.info("Loading servable: {name: %s version: %d} from %s", name, version, path)
        try:
            model = self._loader(path)
        except ServingError as error:
            self._load_failed(name, record, error)
            return
        except Exception as error:  # noqa: BLE001  (a loader bug becomes the version's error, not the server's)
            self._load_failed(name, record, ServingError(grpc.StatusCode.UNKNOWN, f"{type(error).__name__}: {error}"))
            return
        with self._changed:
            record.model, record.state, record.error = model, State.AVAILABLE, None
            self._changed.notify_all()
        if self._metrics:
            self._metrics.record_load(str(path), "OK")
        LOG.info("Successfully loaded servable version {name: %s version: %d}", name, version)

    def _load_failed(self, name: str, record: VersionRecord, error: ServingError) -> None:
        with self._changed:
            record.state, record.error = State.END, error
            record.retry_at = time.monotonic() + self._policy.retry_interval_s
            self._changed.notify_all()
        if self._metrics:
            self._metrics.record_load(str(record.path), error.code_name)
        LOG.error("Loading servable: {name: %s version: %d} failed: %s", name, record.version, error)

    def _unload(self, name: str, record: VersionRecord) -> None:
        with self._changed:
            if record.state != State.AVAILABLE:
                return
            record.state = State.UNLOADING
            deadline = time.monotonic() + self._policy.unload_timeout_s
            while record.in_flight and time.monotonic() < deadline:
                self._changed.wait(timeout=max(0.0, deadline - time.monotonic()))
            model, record.model = record.model, None
        if model is not None:
            model.close()
        with self._changed:
            record.state = State.END
        LOG.info("Unloaded servable version {name: %s version: %d}", name, record.version)

    def serves(self, name: str) -> bool:
        """Whether `name` is one of the configured models (loaded or not)."""
        with self._changed:
            return name in self._settings

    def resolve_version(self, name: str, version: int | None = None, label: str | None = None) -> int:
        """The version a request names: a number, a label, or the latest available one."""
        with self._changed:
            return self._resolve_locked(name, version, label).version

    def _resolve_locked(self, name: str, version: int | None, label: str | None) -> VersionRecord:
        records = self._versions.get(name)
        if records is None:
            raise servable_not_found(name, version)
        if label:
            labelled = self._settings[name].label_version(label)
            if labelled is None:
                raise invalid_argument(f"Unrecognized servable version label: {label}")
            version = labelled
        if version is not None:
            record = records.get(version)
            if record is None or record.state != State.AVAILABLE:
                raise servable_not_found(name, version)
            return record
        available = [r for r in records.values() if r.state == State.AVAILABLE]
        if not available:
            raise servable_not_found(name)
        return max(available, key=lambda r: r.version)

    @contextlib.contextmanager
    def acquire(self, name: str, version: int | None = None, label: str | None = None) -> Iterator[Servable]:
        """Holds a served version for one request; it is not unloaded until released.

        Raises:
            ServingError: NOT_FOUND "Servable not found for request: Latest(<name>)" / "Specific(<name>, <v>)",
                INVALID_ARGUMENT "Unrecognized servable version label: <label>".
        """
        with self._changed:
            record = self._resolve_locked(name, version, label)
            assert record.model is not None
            record.in_flight += 1
            servable = Servable(name, record.version, record.model)
        try:
            yield servable
        finally:
            with self._changed:
                record.in_flight -= 1
                self._changed.notify_all()

    def status(self, name: str, version: int | None = None) -> list[get_model_status_pb2.ModelVersionStatus]:
        """TF Serving's model status: every version seen, newest first, with its state and last error.

        Raises:
            ServingError: NOT_FOUND "Could not find any versions of model <name>" /
                "Could not find version <v> of model <name>".
        """
        with self._changed:
            records = dict(self._versions.get(name, {}))
            statuses = {v: _version_status(r) for v, r in records.items()}
        if version is not None:
            if version not in statuses:
                raise not_found(f"Could not find version {version} of model {name}")
            return [statuses[version]]
        if not statuses:
            raise not_found(f"Could not find any versions of model {name}")
        return [statuses[v] for v in sorted(statuses, reverse=True)]


def _version_status(record: VersionRecord) -> get_model_status_pb2.ModelVersionStatus:
    status = get_model_status_pb2.ModelVersionStatus(version=record.version, state=record.state)
    status.status.SetInParent()  # TF Serving always reports it, {"error_code": "OK"} included
    if record.error is not None:
        status.status.error_code = record.error.code.value[0]
        status.status.error_message = record.error.message
    return status
