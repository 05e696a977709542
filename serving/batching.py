"""Server-side batching: concurrent Predict requests for the same model version and signature run as one.

Requests join a batch when they can be concatenated along dimension 0: the same inputs,
dtypes and non-batch dimensions, or, with pad_variable_length_inputs, the same inputs,
dtypes and ranks (each request's tensor is then padded to the batch's largest dimensions
with its own first element, as TF Serving pads). A batch runs when it reaches max_batch_size
or when its first request has waited batch_timeout_micros; it is padded up to the next
allowed_batch_sizes entry by repeating its first row, and each caller gets its own rows of
the outputs back (split along dimension 0 only, as in TF Serving). Outputs that are not
batch-major (dimension 0 differs from the batch size) cannot be split, so such a batch is
re-run request by request.

Each request may carry a deadline: a request whose deadline passes while it waits is answered
DEADLINE_EXCEEDED at once and dropped from its batch (never run), and a batch runs with the
latest deadline of its requests as its session timeout.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable, Mapping

import numpy as np

from recsys_common.server_config import BatchingOptions
from serving.errors import ServingError, deadline_exceeded, internal, invalid_argument, unavailable

# Runs the signature on (batched inputs, seconds left before the latest caller's deadline or None).
Run = Callable[[Mapping[str, np.ndarray], float | None], dict[str, np.ndarray]]
@dataclasses.dataclass(eq=False)
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    run: Run
    deadline: float | None = None  # time.monotonic() when the caller gives up
    done: threading.Event = dataclasses.field(default_factory=threading.Event)
    outputs: dict[str, np.ndarray] | None = None
    error: ServingError | None = None
    abandoned: bool = False  # the caller has stopped waiting (its deadline passed)

    def expired(self, now: float) -> bool:
        return self.abandoned or (self.deadline is not None and now >= self.deadline)

    def time_left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


@dataclasses.dataclass(eq=False)
class _Batch:
    key: Hashable
    opened_at: float
    tasks: list[_Task] = dataclasses.field(default_factory=list)
    size: int = 0


def batch_size_of(inputs: Mapping[str, np.ndarray]) -> int:
    """The common dimension 0 of the inputs.

    Raises:
        ServingError: INVALID_ARGUMENT for a scalar input or differing 0th dimensions (TF Serving's words).
    """
    sizes = set()
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        sizes.add(array.shape[0])
    if len(sizes) != 1:
        raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return sizes.pop()


def _shape_key(inputs: Mapping[str, np.ndarray], pad: bool) -> tuple[tuple[str, str, object], ...]:
    """What must agree for requests to be concatenated: dtypes and non-batch dims (or only ranks when padding)."""
    return tuple((name, inputs[name].dtype.str, inputs[name].ndim if pad else inputs[name].shape[1:])
                 for name in sorted(inputs))


class BatchScheduler:
    """Collects concurrent requests into batches and runs them on worker threads."""

    def __init__(self, options: BatchingOptions) -> None:
        options.validate()
        self.options = options
        self._cv = threading.Condition()
        self._open: dict[Hashable, _Batch] = {}
        self._ready: list[_Batch] = []
        self._stopped = False
        self._workers = [threading.Thread(target=self._work, name=f"batch-{i}", daemon=True)
                         for i in range(options.num_batch_threads)]
        for worker in self._workers:
            worker.start()

    def run(self, key: Hashable, inputs: Mapping[str, np.ndarray], run: Run,
            deadline: float | None = None) -> dict[str, np.ndarray]:
        """Runs `run` on these inputs as part of a batch; blocks until this request's rows are back.

        Args:
            key: what must be equal for requests to share a batch (model version, signature, output filter).
            inputs: alias -> [B, ...] arrays.
            run: runs the signature on batched inputs within a timeout.
            deadline: the caller's `time.monotonic()` deadline (None: none).

        Raises:
            ServingError: INVALID_ARGUMENT "Task size <B> is larger than maximum input batch size <M>",
                UNAVAILABLE when the queue is full, DEADLINE_EXCEEDED when the deadline passes first,
                or the error of the batch's run.
        """
        size = batch_size_of(inputs)
        if size > self.options.max_batch_size:
            raise invalid_argument(f"Task size {size} is larger than maximum input batch size "
                                   f"{self.options.max_batch_size}")
        task = _Task(inputs, size, run, deadline)
        if task.expired(time.monotonic()):
            raise deadline_exceeded("The request's deadline passed before it was batched")
        self._enqueue((key, _shape_key(inputs, self.options.pad_variable_length_inputs)), task)
        if not task.done.wait(timeout=task.time_left()):
            with self._cv:
                task.abandoned = True  # a worker that has not taken it yet drops it
            raise deadline_exceeded("The request's deadline passed while it waited in the batching queue")
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def _enqueue(self, key: Hashable, task: _Task) -> None:
        with self._cv:
            if self._stopped:
                raise unavailable("The batch scheduler has been stopped")
            batch = self._open.get(key)
            if batch is not None and batch.size + task.size > self.options.max_batch_size:
                self._ready.append(self._open.pop(key))
                batch = None
            if batch is None:
                if len(self._ready) + len(self._open) >= self.options.max_enqueued_batches:
                    raise unavailable("The batch scheduling queue to which this task was submitted is full")
                batch = self._open[key] = _Batch(key, time.monotonic())
            batch.tasks.append(task)
            batch.size += task.size
            if batch.size >= self.options.max_batch_size:
                self._ready.append(self._open.pop(key))
            self._cv.notify_all()

    def _next_batch(self) -> _Batch | None:
        timeout = self.options.batch_timeout_micros / 1e6
        with self._cv:
            while not self._stopped:
                if self._ready:
                    return self._ready.pop(0)
                now = time.monotonic()
                due = [b for b in self._open.values() if now - b.opened_at >= timeout]
                if due:
                    oldest = min(due, key=lambda b: b.opened_at)
                    return self._open.pop(oldest.key)
                wait = min((b.opened_at + timeout - now for b in self._open.values()), default=None)
                self._cv.wait(timeout=wait)
            return None

    def _work(self) -> None:
        while (batch := self._next_batch()) is not None:
            with self._cv:
                now = time.monotonic()
                expired: list[_Task] = []
                live: list[_Task] = []
                for task in batch.tasks:
                    (expired if task.expired(now) else live).append(task)
                batch.tasks = live
            for task in expired:
                task.error = deadline_exceeded("The request's deadline passed while it waited in the batching queue")
                task.done.set()
            if batch.tasks:
                batch.size = sum(task.size for task in batch.tasks)
                _run_batch(batch, self.options.allowed_batch_sizes)

    def stop(self) -> None:
        """Fails queued requests with UNAVAILABLE and stops the workers."""
        with self._cv:
            self._stopped = True
            pending = self._ready + list(self._open.values())
            self._ready, self._open = [], {}
            self._cv.notify_all()
        for batch in pending:
            for task in batch.tasks:
                task.error = unavailable("The server is shutting down")
                task.done.set()
        for worker in self._workers:
            worker.join(timeout=5)


def _padded_size(size: int, allowed: tuple[int, ...]) -> int:
    if not allowed:
        return size
    return allowed[bisect.bisect_left(allowed, size)]


def _batch_time_left(tasks: list[_Task]) -> float | None:
    """The session timeout of a batch: until its last caller's deadline (None if one has none)."""
    left = [task.time_left() for task in tasks]
    return None if any(value is None for value in left) else max(value for value in left if value is not None)


def _run_batch(batch: _Batch, allowed: tuple[int, ...]) -> None:
    tasks = batch.tasks
    try:
        if len(tasks) == 1 and not allowed:
            tasks[0].outputs = tasks[0].run(tasks[0].inputs, tasks[0].time_left())
        else:
            _run_concatenated(tasks, _padded_size(batch.size, allowed))
    except ServingError as error:
        for task in tasks:
            task.error = error
    except Exception as error:  # noqa: BLE001  (a worker must never die and leave callers waiting)
        for task in tasks:
            task.error = internal(f"Batch failed: {type(error).__name__}: {error}")
    finally:
        for task in tasks:
            task.done.set()


def _pad_to(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Pads the non-batch dims up to `shape` with the array's own first element (TF Serving's padding)."""
    if array.shape == shape:
        return array
    fill = array.reshape(-1)[0] if array.size else (b"" if array.dtype.kind in "OS" else 0)
    padded = np.full(shape, fill, dtype=array.dtype)
    padded[tuple(slice(0, size) for size in array.shape)] = array
    return padded


def _run_concatenated(tasks: list[_Task], padded_size: int) -> None:
    names = sorted(tasks[0].inputs)
    total = sum(task.size for task in tasks)
    merged = {}
    for name in names:
        parts = [task.inputs[name] for task in tasks]
        widest = tuple(max(sizes) for sizes in zip(*(part.shape[1:] for part in parts)))
        parts = [_pad_to(part, (part.shape[0], *widest)) for part in parts]
        if padded_size > total:
            parts.append(np.repeat(parts[0][:1], padded_size - total, axis=0))
        merged[name] = np.concatenate(parts, axis=0)
    outputs = tasks[0].run(merged, _batch_time_left(tasks))
    if any(value.ndim == 0 or value.shape[0] != padded_size for value in outputs.values()):
        for task in tasks:  # not batch-major: the rows cannot be told apart
            try:
                task.outputs = task.run(task.inputs, task.time_left())
            except ServingError as error:
                task.error = error
        return
    start = 0
    for task in tasks:
        task.outputs = {name: value[start:start + task.size] for name, value in outputs.items()}
        start += task.size
