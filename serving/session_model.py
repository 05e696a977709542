"""A SavedModel run the way TF Serving runs it: a TF1 session, SignatureDef tensors fed and fetched by name.

TF Serving does not call the Python `tf.function`s of a SavedModel: it loads the MetaGraph
tagged "serve" into a `Session` and calls `Session::Run` with the tensor names that the
SignatureDef lists. This module does the same through the C API's Session::Run (no Python-side
shape checks on this hot path, so an input of shape [3] may be fed to a [-1, 1] placeholder exactly
as TF Serving allows; the caller's deadline goes in as RunOptions.timeout_in_ms), after registering
the ScaNN custom ops so that a ScaNN index loads. The server checks each request's shapes before it
gets here (`check_input_shapes`, with the same leniency for declared size-1 dimensions), against the
`DeclaredShapes` that `SessionModel.declared_shapes` reads from each SignatureDef once.

Usage:
    model = SessionModel.load(Path("saved_models/ranking/3"))
    outputs = model.run("serving_default", {"user_id": np.array([b"42"]), ...})
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys_common import tf_env  # noqa: F401  (before TensorFlow loads)

# isort: split
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import config_pb2, meta_graph_pb2
from tensorflow.python.client import pywrap_tf_session as tf_session

from recsys_common import contract
from serving.errors import (
    ServingError,
    code_from_number,
    deadline_exceeded,
    failed_precondition,
    invalid_argument,
    not_found,
    unavailable,
)

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; annotations only, so 3.10 runs this module too

LOG = logging.getLogger(__name__)
SERVE_TAGS = ("serve",)
_SCANN_OPS_MODULE = "scann.scann_ops.py.scann_ops"


def register_custom_ops() -> bool:
    """Loads the ScaNN TensorFlow ops (namespace `Scann`) into this process; idempotent.

    Returns:
        True when the ops are registered, False when ScaNN is not installed (stock models still load).
    """
    try:
        importlib.import_module(_SCANN_OPS_MODULE)
    except ImportError as error:
        LOG.warning("ScaNN ops not registered (%s): models using them will fail to load", error)
        return False
    return True


def serving_session_config(intra_op_parallelism: int = 0, inter_op_parallelism: int = 0) -> config_pb2.ConfigProto:
    """The session options TF Serving's model server derives from --tensorflow_{intra,inter}_op_parallelism.

    As in TF Serving (model_servers/server.cc), the two flags are used as given when either is positive, and
    otherwise both thread pools are left to TF (0). So inter_op_parallelism=-1, which runs every op of a request
    in the request's own thread (TF's DirectSession), takes effect only beside a positive intra_op_parallelism;
    for graphs as small as the retrieval and ranking signatures that saves the thread hand-offs per op.
    """
    if intra_op_parallelism > 0 or inter_op_parallelism > 0:
        return config_pb2.ConfigProto(intra_op_parallelism_threads=intra_op_parallelism,
                                      inter_op_parallelism_threads=inter_op_parallelism)
    return config_pb2.ConfigProto()


def _shape_dims(tensor_info: meta_graph_pb2.TensorInfo) -> tuple[int, ...] | None:
    """The declared dims (-1 for unknown), or None when the rank is unknown."""
    shape = tensor_info.tensor_shape
    if shape.unknown_rank:
        return None
    return tuple(int(dim.size) for dim in shape.dim)


@dataclasses.dataclass(frozen=True)
class DeclaredShapes:
    """The input shapes one SignatureDef declares, read from its TensorInfo protos once (the request checks
    `check_input_shapes` and `serving.core.check_batch` run on every request and share it).

    Attributes:
        dims: input alias -> its declared dims (-1 for an unknown size), or None when the rank is unknown;
            e.g. {"user_id": (-1,), "watch_history": (-1, 50)}.
    """

    dims: Mapping[str, tuple[int, ...] | None]

    @classmethod
    def read(cls, proto: meta_graph_pb2.SignatureDef) -> DeclaredShapes:
        return cls({alias: _shape_dims(info) for alias, info in proto.inputs.items()})


def _shape_compatible(declared: Sequence[int], actual: tuple[int, ...]) -> bool:
    """-1 is any size; a declared 1 is any size too and may be left out, as TF Serving's Session::Run
    lets x [3] into half_plus_two's [-1, 1] (and [2] into its TF2 twin's [1])."""
    if len(declared) != len(actual):
        declared = [want for want in declared if want != 1]
    if len(declared) != len(actual):
        return False
    return all(want in (-1, 1, got) for want, got in zip(declared, actual))


def check_input_shapes(shapes: DeclaredShapes, inputs: Mapping[str, Any]) -> None:
    """Refuses an input whose rank or a known dimension disagrees with the signature's `shapes`, before the run.

    Raises:
        ServingError: INVALID_ARGUMENT naming the input, its shape and the declared one.
    """
    for alias in sorted(inputs.keys() & shapes.dims.keys()):
        declared = shapes.dims[alias]
        if declared is None:
            continue  # unknown rank: any shape
        try:
            actual = tuple(np.shape(inputs[alias]))
        except ValueError:
            continue  # ragged nested lists: their conversion names the input
        if not _shape_compatible(declared, actual):
            raise invalid_argument(
                f"input '{alias}' has shape {list(actual)} but the signature declares {list(declared)}")


@dataclasses.dataclass(frozen=True)
class _Signature:
    """What `SessionModel.run` needs of one SignatureDef, read from the proto once (the per-request path is hot).

    Attributes:
        shapes: the declared input shapes (the request checks and the run's error messages read them).
        inputs: input alias -> feed tensor name.
        outputs: output alias -> fetch tensor name.
        dtypes: input alias -> declared dtype.
        defaults: input alias -> the value fed when a request leaves it out.
        all_outputs: every output alias, sorted (fetched when a request names none).
    """

    shapes: DeclaredShapes
    inputs: dict[str, str]
    outputs: dict[str, str]
    dtypes: dict[str, tf.DType]
    defaults: dict[str, np.ndarray]
    all_outputs: tuple[str, ...]

    @classmethod
    def read(cls, proto: meta_graph_pb2.SignatureDef) -> _Signature:
        return cls(shapes=DeclaredShapes.read(proto),
                   inputs={alias: info.name for alias, info in proto.inputs.items()},
                   outputs={alias: info.name for alias, info in proto.outputs.items()},
                   dtypes={alias: tf.dtypes.as_dtype(info.dtype) for alias, info in proto.inputs.items()},
                   defaults={alias: tf.make_ndarray(value) for alias, value in proto.defaults.items()},
                   all_outputs=tuple(sorted(proto.outputs)))


class SessionModel:
    """One loaded SavedModel version: its session, its MetaGraphDef and the cached tensor endpoints of its signatures.

    Thread-safe: `run` may be called from many threads at once (TF sessions are).
    """

    def __init__(self, session: tf.compat.v1.Session, meta_graph_def: meta_graph_pb2.MetaGraphDef,
                 export_dir: Path) -> None:
        self._session = session
        self.meta_graph_def = meta_graph_def
        self.export_dir = export_dir
        self._endpoint_cache: dict[tuple[tuple[str, ...], tuple[str, ...]], tuple[list[Any], list[Any]]] = {}
        self._signatures: dict[str, _Signature] = {}
        session._extend_graph()  # the loaded graph, handed to the C session once (what session.run would do)
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def load(cls, export_dir: Path | str, tags: Sequence[str] = SERVE_TAGS,
             session_config: config_pb2.ConfigProto | None = None) -> SessionModel:
        """Loads a SavedModel version directory into a new graph and session.

        Args:
            export_dir: the version directory (holding saved_model.pb and variables/).
            tags: the MetaGraph tags to load (TF Serving uses {"serve"}).
            session_config: optional session options (thread pools).

        Raises:
            ServingError: NOT_FOUND when there is no SavedModel there, or the TF error's code
                (e.g. NOT_FOUND for an unregistered op) with a message naming the directory.
        """
        export_dir = Path(export_dir)
        if not tf.compat.v1.saved_model.contains_saved_model(str(export_dir)):
            raise not_found(f"No SavedModel (saved_model.pb) found in {export_dir}")
        register_custom_ops()
        graph = tf.Graph()
        session = tf.compat.v1.Session(graph=graph, config=session_config)
        try:
            with graph.as_default():
                meta_graph_def = tf.compat.v1.saved_model.loader.load(session, list(tags), str(export_dir))
        except tf.errors.OpError as error:
            session.close()
            raise ServingError(code_from_number(error.error_code),
                               f"Failed to load SavedModel from {export_dir}: {error.message}") from error
        except (ValueError, RuntimeError, OSError) as error:
            session.close()
            raise ServingError(grpc.StatusCode.UNKNOWN,
                               f"Failed to load SavedModel from {export_dir}: {error}") from error
        return cls(session, meta_graph_def, export_dir)

    def signature_def(self, name: str = contract.SIGNATURE_NAME) -> meta_graph_pb2.SignatureDef:
        """The SignatureDef `name` ("" means serving_default).

        Raises:
            ServingError: FAILED_PRECONDITION `Serving signature key "<name>" not found.` (TF Serving's words).
        """
        name = name or contract.SIGNATURE_NAME
        if name not in self.meta_graph_def.signature_def:
            raise failed_precondition(f'Serving signature key "{name}" not found.')
        return self.meta_graph_def.signature_def[name]

    def declared_shapes(self, name: str = contract.SIGNATURE_NAME) -> DeclaredShapes:
        """The input shapes that signature `name` ("" means serving_default) declares, read once per signature.

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature (as `signature_def`).
        """
        return self._signature(name or contract.SIGNATURE_NAME).shapes

    def run(self, signature_name: str, inputs: Mapping[str, Any], output_filter: Sequence[str] = (),
            timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """Runs a signature: feeds its input tensors by name, fetches its output tensors.

        Args:
            signature_name: the SignatureDef key ("" means serving_default).
            inputs: input alias -> array-like. Every signature input is required (as in TF Serving).
                Lists are converted to the signature dtype; arrays must already have it (strings
                may be str, bytes or object arrays). Shapes are whatever the graph accepts (the server
                checks requests with `check_input_shapes` first), e.g. user_id [B], watch_history [B, H].
            output_filter: the output aliases to fetch (default: all of them).
            timeout_s: the time left to the caller's deadline: the session run is cancelled after it
                (`RunOptions.timeout_in_ms`, as TF Serving passes the RPC deadline); None: no limit.

        Returns:
            output alias -> array (strings as object arrays of bytes), e.g. item_ids [B, K], scores [B, K].

        Raises:
            ServingError: FAILED_PRECONDITION for an unknown signature; INVALID_ARGUMENT for missing,
                extra or mistyped inputs, unknown output aliases and inputs the graph rejects;
                DEADLINE_EXCEEDED when `timeout_s` runs out.
        """
        signature = self._signature(signature_name or contract.SIGNATURE_NAME)
        _check_input_names(signature, inputs)
        inputs = {**signature.defaults, **inputs}
        aliases = sorted(inputs)
        feeds = [_as_feed(alias, signature.dtypes[alias], inputs[alias]) for alias in aliases]
        output_aliases = _select_outputs(signature, output_filter)
        feed_outputs, fetch_outputs = self._endpoints(tuple(signature.inputs[a] for a in aliases),
                                                      tuple(signature.outputs[a] for a in output_aliases))
        try:
            values = self._session_run(dict(zip(feed_outputs, feeds)), fetch_outputs, timeout_s)
        except tf.errors.OpError as error:
            if error.error_code == tf.errors.DEADLINE_EXCEEDED and timeout_s is not None:
                raise deadline_exceeded(f"The request's deadline ({timeout_s * 1000:.0f} ms left) passed while "
                                        f"running signature '{signature_name or contract.SIGNATURE_NAME}' of "
                                        f"{self.export_dir}") from error
            raise ServingError(code_from_number(error.error_code),
                               _explain_run_error(error.message, signature.shapes, aliases, feeds)) from error
        return {alias: np.asarray(value) for alias, value in zip(output_aliases, values)}

    def _session_run(self, feeds: dict[Any, np.ndarray], fetches: list[Any], timeout_s: float | None) -> list[Any]:
        """Session::Run by tensor endpoints, with RunOptions carrying the timeout (no Python-side shape checks)."""
        options = None
        if timeout_s is not None:
            run_options = config_pb2.RunOptions(timeout_in_ms=max(1, math.ceil(timeout_s * 1000)))
            options = tf_session.TF_NewBufferFromString(run_options.SerializeToString())
        try:
            return list(self._session._call_tf_sessionrun(options, feeds, fetches, [], None))
        finally:
            if options is not None:
                tf_session.TF_DeleteBuffer(options)

    def _signature(self, name: str) -> _Signature:
        """The signature `name`, read from the proto on its first request."""
        signature = self._signatures.get(name)  # read without the lock: entries are only ever added, whole
        if signature is not None:
            return signature
        with self._lock:
            if name not in self._signatures:
                self._signatures[name] = _Signature.read(self.signature_def(name))
            return self._signatures[name]

    def _endpoints(self, feed_names: tuple[str, ...], fetch_names: tuple[str, ...]) -> tuple[list[Any], list[Any]]:
        """The C API endpoints (TF_Output) of the named feed and fetch tensors, cached per name set."""
        key = (feed_names, fetch_names)
        with self._lock:
            if self._closed:
                raise unavailable(f"Model {self.export_dir} has been unloaded")
            if key not in self._endpoint_cache:
                graph = self._session.graph
                try:
                    self._endpoint_cache[key] = (
                        [graph.get_tensor_by_name(name)._as_tf_output() for name in feed_names],
                        [graph.get_tensor_by_name(name)._as_tf_output() for name in fetch_names])
                except (KeyError, ValueError) as error:
                    raise failed_precondition(f"The signature names a tensor the graph lacks: {error}") from error
            return self._endpoint_cache[key]

    def close(self) -> None:
        """Releases the session; later `run` calls fail with UNAVAILABLE."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._endpoint_cache.clear()
        self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _check_input_names(signature: _Signature, inputs: Mapping[str, Any]) -> None:
    """TF Serving's checks, in its order: the count first, then each alias."""
    requested, declared = set(inputs), set(signature.inputs)
    if len(requested) > len(declared) or (len(requested) < len(declared) and not signature.defaults):
        extra, missing = sorted(requested - declared), sorted(declared - requested)
        raise invalid_argument(
            f"input size does not match signature: {len(requested)}!={len(declared)} "
            f"len({{{','.join(sorted(requested))}}}) != len({{{','.join(sorted(declared))}}}). "
            f"Sent extra: {{{','.join(extra)}}}. Missing but required: {{{','.join(missing)}}}.")
    unknown = sorted(requested - declared)
    if unknown:
        raise invalid_argument(
            f"input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in the set "
            f"{{{','.join(sorted(declared))}}}.")
    missing = sorted(declared - requested - set(signature.defaults))
    if missing:
        raise invalid_argument(f"Missing but required: {{{','.join(missing)}}} (no default in the signature).")


def _select_outputs(signature: _Signature, output_filter: Sequence[str]) -> Sequence[str]:
    if not output_filter:
        return signature.all_outputs
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to be in the set "
                f"{{{','.join(signature.all_outputs)}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(output_filter)


def _as_feed(alias: str, want: tf.DType, value: Any) -> np.ndarray:
    """Converts one input to the array fed to the session, checking its dtype against the signature's `want`."""
    if want.as_datatype_enum == types_pb2.DT_STRING:
        array = value if isinstance(value, np.ndarray) else np.asarray(value, dtype=object)
        return _as_string_feed(alias, array)
    if not isinstance(value, np.ndarray):
        try:
            return np.asarray(value, dtype=want.as_numpy_dtype)
        except (TypeError, ValueError) as error:
            raise invalid_argument(f"input '{alias}' cannot be converted to {want.name}: {error}") from error
    if value.dtype != np.dtype(want.as_numpy_dtype):
        raise _type_mismatch(alias, want.name, _numpy_dtype_name(value))
    return value


def _as_string_feed(alias: str, array: np.ndarray) -> np.ndarray:
    """Bytes arrays pass as they are; str items are UTF-8 encoded; anything else is a type mismatch."""
    if array.dtype.kind == "S":
        return array
    if array.dtype.kind == "U":
        return np.vectorize(_as_bytes, otypes=[object])(array) if array.size else array.astype(object)
    if array.dtype.kind == "O":
        items = array.reshape(-1)
        if set(map(type, items)) <= {bytes}:
            return array
        if all(isinstance(item, (bytes, str)) for item in items):
            return np.vectorize(_as_bytes, otypes=[object])(array)
    raise _type_mismatch(alias, "string", _numpy_dtype_name(array))


def _as_bytes(item: str | bytes) -> bytes:
    return item.encode("utf-8") if isinstance(item, str) else item


def _numpy_dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind == "O":
        odd = next((item for item in array.reshape(-1) if not isinstance(item, (bytes, str))), None)
        return "string" if odd is None else f"object ({type(odd).__name__})"
    if array.dtype.kind in "US":
        return "string"
    try:
        return str(tf.dtypes.as_dtype(array.dtype).name)
    except TypeError:
        return str(array.dtype)


def _type_mismatch(alias: str, want: str, got: str) -> ServingError:
    tf_words = {"float32": "float", "float64": "double"}
    return invalid_argument(
        f"Type mismatch for input '{alias}': actual {tf_words.get(got, got)} vs. expect {tf_words.get(want, want)}")


def _explain_run_error(message: str, shapes: DeclaredShapes, aliases: Sequence[str],
                       feeds: Sequence[np.ndarray]) -> str:
    """TF's message, plus the inputs whose shapes disagree with the signature (the likely cause)."""
    mismatches = []
    for alias, feed in zip(aliases, feeds):
        declared = shapes.dims[alias]
        if declared is not None and not _shape_compatible(declared, feed.shape):
            mismatches.append(
                f"input '{alias}' has shape {list(feed.shape)} but the signature declares {list(declared)}")
    message = message.strip()
    return f"{message} ({'; '.join(mismatches)})" if mismatches else message
