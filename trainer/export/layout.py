"""The TF Serving version layout: `<model_base>/<version>/` written atomically.

TF Serving (and `serving.server`) poll `<model_base>` and treat every child whose name
is an integer as a version. A version is therefore first written into a hidden folder
beside it (`.tmp-<version>-<random>`, not numeric, so pollers ignore it) and then
renamed into place with one `os.rename`, so a poller sees either no version or a
complete one. Versions only grow and an existing version is never overwritten.

    <model_base>/<version>/
        saved_model.pb, variables/
        assets/export_metadata.json          (contract.METADATA_ASSET)
        assets.extra/tf_serving_warmup_requests  (contract.WARMUP_FILE, PredictionLog TFRecord)

One export publishes several models (retrieval, retrieval_bruteforce, ranking, the shards)
that serve together, so `VersionSet` gives them ONE version number and publishes them
together: every model is written into its `.tmp-*` folder first, then a journal
(`.publishing-<version>.json` in the output folder, naming each model's temporary folder)
is written and the folders are renamed into place, then the journal is removed. The set
holds an exclusive lock on `<output>/.export.lock` (released by the kernel when the
process dies), and on entry repairs what a killed export left: a journal is completed
(or, if a model's temporary folder is gone, rolled back) and every `.tmp-*` leftover is
removed, so the models of a set are published all together or not at all.
"""

from __future__ import annotations

import errno
import fcntl
import inspect
import json
import logging
import os
import pathlib
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import IO, Any

import numpy as np
import tensorflow as tf
from google.protobuf import message as message_lib
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from recsys_common import contract
from recsys_common.layout import version_directories, warmup_file
from recsys_common.warmup_log import read_warmup_logs
from trainer.run import json_default

TEMP_PREFIX = ".tmp-"
REQUIRED_OPS = "required_ops"  # export metadata: every op the saved graph runs
CUSTOM_OPS = "custom_ops"  # export metadata: those of a custom namespace ("Scann>...")
JOURNAL_PREFIX = ".publishing-"
LOCK_FILE = ".export.lock"
_PUBLISH_ATTEMPTS = 5

Publisher = Callable[[pathlib.Path, Callable[[pathlib.Path], None]], pathlib.Path]
"""`(model_base, write) -> version folder`: `publish_version`, or `VersionSet.stage` to publish with others."""


class ExportError(RuntimeError):
    """An export that cannot be written or read back; the message names the path."""


def list_versions(model_base: pathlib.Path) -> list[int]:
    """The published versions under `model_base`, ascending (empty if the folder is missing)."""
    return sorted(version for version in version_directories(pathlib.Path(model_base)) if version > 0)


def next_version(model_base: pathlib.Path) -> int:
    """One more than the highest version, counting folders being written; 1 for an empty base.

    Versions only grow, so a version in progress (a `.tmp-<version>-*` folder) is
    counted too: two exporters of the same model never aim at the same number.
    """
    model_base = pathlib.Path(model_base)
    taken = list_versions(model_base) + _versions_in_progress(model_base)
    return max(taken, default=0) + 1


def publish_version(model_base: pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
    """Writes a new version with `write(temp_dir)` and renames it to `<model_base>/<version>`.

    Args:
        model_base: the model's base path (created if missing).
        write: fills the (existing, empty) folder it is given; it may raise.

    Returns:
        The published version folder.

    Raises:
        ExportError: `write` left the folder empty, or no free version number was found.
        Whatever `write` raises; the temporary folder is removed first.
    """
    model_base = pathlib.Path(model_base)
    model_base.mkdir(parents=True, exist_ok=True)
    version = next_version(model_base)
    temp_dir = _write_temp_version(model_base, version, write)
    try:
        return _rename_to_free_version(temp_dir, model_base, version)
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)


def _write_temp_version(model_base: pathlib.Path, version: int, write: Callable[[pathlib.Path], None]
                        ) -> pathlib.Path:
    """A new `<model_base>/.tmp-<version>-<random>` folder filled by `write`; removed again if `write` raises
    or writes nothing (ExportError)."""
    model_base.mkdir(parents=True, exist_ok=True)
    temp_dir = model_base / f"{TEMP_PREFIX}{version}-{secrets.token_hex(4)}"
    temp_dir.mkdir()
    try:
        write(temp_dir)
        if not any(temp_dir.iterdir()):
            raise ExportError(f"export into {model_base} wrote nothing; no version was published")
    except BaseException:
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return temp_dir


class VersionSet:
    """The models of one export, published together under one version number (see the module docstring).

    Use as a context manager; `stage` is a `Publisher` for the exporters, `publish` renames them all:

        with VersionSet(base_dir, [RETRIEVAL, RETRIEVAL_BRUTEFORCE, RANKING]) as versions:
            export_retrieval(..., publish=versions.stage); export_ranking(..., publish=versions.stage)
            versions.publish()
            write_server_configs(base_dir, ...)

    Leaving the block without `publish` (an exception) removes the staged folders; nothing is published.
    """

    def __init__(self, base_dir: pathlib.Path, models: Sequence[str], log: logging.Logger | None = None) -> None:
        if not models or len(set(models)) != len(models):
            raise ExportError(f"a version set needs distinct model names, got {list(models)}")
        self.base_dir = pathlib.Path(base_dir)
        self.models = list(models)
        self.log = log or logging.getLogger(__name__)
        self.version = 0
        self._staged: dict[str, pathlib.Path] = {}
        self._lock: IO[str] | None = None

    def __enter__(self) -> VersionSet:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.base_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held until __exit__)
        fcntl.flock(self._lock, fcntl.LOCK_EX)
        repair_exports(self.base_dir, self.models, self.log)
        models = [child for child in self.base_dir.iterdir() if child.is_dir()]  # every model: numbers never reused
        self.version = max((v for model in models for v in list_versions(model)), default=0) + 1
        return self

    def __exit__(self, *_: object) -> None:
        for temp_dir in self._staged.values():
            shutil.rmtree(temp_dir, ignore_errors=True)
        self._staged.clear()
        if self._lock is not None:
            self._lock.close()  # releases the flock
            self._lock = None

    def stage(self, model_base: pathlib.Path, write: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """Writes model `model_base.name` of the set into a temporary folder; returns where `publish` puts it.

        Raises:
            ExportError: outside the `with` block, a model not in the set or staged twice, or `write` wrote nothing.
            Whatever `write` raises; its temporary folder is removed first.
        """
        model_base = pathlib.Path(model_base)
        name = model_base.name
        if self._lock is None:
            raise ExportError(f"stage({model_base}) outside the VersionSet's with block")
        if model_base.parent.resolve() != self.base_dir.resolve() or name not in self.models or name in self._staged:
            raise ExportError(f"{model_base} is not an unstaged model of this set {self.models} under {self.base_dir}")
        self._staged[name] = _write_temp_version(model_base, self.version, write)
        return model_base / str(self.version)

    def publish(self) -> dict[str, pathlib.Path]:
        """Renames every staged model into `<model>/<version>`, journalled so a kill half-way is completed later.

        Raises:
            ExportError: a model of the set was not staged (nothing is published then).
        """
        missing = [name for name in self.models if name not in self._staged]
        if missing:
            raise ExportError(f"models {missing} of the version set were not written; nothing was published")
        journal = self.base_dir / f"{JOURNAL_PREFIX}{self.version}.json"
        _write_json_atomically(journal, {"version": self.version,
                                         "models": {name: temp.name for name, temp in self._staged.items()}})
        published = {}
        for name, temp_dir in self._staged.items():
            published[name] = temp_dir.parent / str(self.version)
            os.rename(temp_dir, published[name])
        self._staged.clear()
        _fsync_directory(self.base_dir)
        journal.unlink()
        return published


def repair_exports(base_dir: pathlib.Path, models: Sequence[str], log: logging.Logger | None = None) -> list[str]:
    """Repairs what killed exports left under `base_dir`; call it holding the export lock (`VersionSet` does).

    Completes (or rolls back) journalled publications and removes `.tmp-*` folders and files. Versions
    that only some of `models` have (published by exporters that did not use a `VersionSet`) are kept
    on disk and reported; `write_server_configs(..., version_sets=True)` does not serve them.

    Returns:
        What was done, one line per change (also logged).
    """
    base_dir = pathlib.Path(base_dir)
    done = [*_replay_journals(base_dir)]
    model_bases = [child for child in base_dir.iterdir()
                   if child.is_dir() and (child.name in models or list_versions(child))]
    for model_base in [base_dir, *model_bases]:  # the output folder and its model folders, nothing else
        for leftover in model_base.iterdir():
            if leftover.name.startswith(TEMP_PREFIX) or (leftover.is_file() and TEMP_PREFIX in leftover.name):
                _remove(leftover)
                done.append(f"removed the leftover {leftover}")
    versions = [set(list_versions(base_dir / name)) for name in models] or [set()]
    out_of_step = sorted(set[int]().union(*versions) - set[int](versions[0]).intersection(*versions))
    if out_of_step:
        done.append(f"versions {out_of_step} are not published for every model of {list(models)}; "
                    "the server configs leave them out")
    for line in done:
        (log or logging.getLogger(__name__)).warning("export repair: %s", line)
    return done


def _replay_journals(base_dir: pathlib.Path) -> list[str]:
    done = []
    for journal in sorted(base_dir.glob(f"{JOURNAL_PREFIX}*.json")):
        try:
            entry = json.loads(journal.read_text(encoding="utf-8"))
            version, temps = int(entry["version"]), dict(entry["models"])
        except (OSError, ValueError, KeyError, TypeError):
            journal.unlink()  # written atomically, so unreadable only if edited by hand: nothing was renamed
            done.append(f"removed the unreadable journal {journal}")
            continue
        targets = {name: base_dir / name / str(version) for name in temps}
        complete = all(targets[name].is_dir() or (base_dir / name / temp).is_dir() for name, temp in temps.items())
        for name, temp in temps.items():
            if complete and not targets[name].is_dir():
                os.rename(base_dir / name / temp, targets[name])
            elif not complete and targets[name].is_dir():
                shutil.rmtree(targets[name])
        journal.unlink()
        done.append(f"{'completed' if complete else 'rolled back'} the publication of version {version} "
                    f"of {sorted(temps)}")
    return done


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _write_json_atomically(path: pathlib.Path, value: Any) -> None:
    temp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(temp, "w", encoding="utf-8") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, path)
    _fsync_directory(path.parent)


def _fsync_directory(path: pathlib.Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_metadata(version_dir: pathlib.Path, metadata: Mapping[str, Any]) -> None:
    """Writes `metadata` as JSON to `<version_dir>/assets/export_metadata.json`.

    NumPy scalars and arrays, paths, sets and tuples are converted to JSON types;
    anything else that JSON cannot hold raises ExportError naming the value's type.
    """
    path = pathlib.Path(version_dir) / contract.ASSETS_DIR / contract.METADATA_ASSET
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        text = json.dumps(metadata, indent=1, default=_json_default, allow_nan=False)
    except (TypeError, ValueError) as error:
        where = _non_finite_path(json.loads(json.dumps(metadata, default=_json_default))) if isinstance(
            error, ValueError) else None
        detail = f"{where} is not a finite number" if where else str(error)
        raise ExportError(f"export metadata for {version_dir} is not JSON-serialisable: {detail}") from None
    path.write_text(text, encoding="utf-8")


def read_metadata(version_dir: pathlib.Path) -> dict[str, Any]:
    """Reads the export metadata of a version.

    Raises:
        ExportError: the asset is missing, not JSON, or not a JSON object.
    """
    path = pathlib.Path(version_dir) / contract.ASSETS_DIR / contract.METADATA_ASSET
    if not path.is_file():
        raise ExportError(f"{path} does not exist: {version_dir} has no export metadata")
    try:
        loaded = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ExportError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(loaded, dict):
        raise ExportError(f"{path} must hold a JSON object, got {type(loaded).__name__}")
    return loaded


def signature_metadata(
    inputs: Sequence[contract.TensorSpec], outputs: Sequence[contract.TensorSpec]
) -> dict[str, Any]:
    """The block of the export metadata that clients build requests from.

    Exporters merge it into the top level of their metadata, next to
    `contract.METADATA_ITEM_TITLES` ({item_id: title}) where the data has titles:
    `write_metadata(version_dir, {**signature_metadata(...), "item_titles": ..., ...})`.

    Returns:
        {"signature_name": ..., "inputs": {name: {"dtype", "rank", "default"}}, "outputs": {...}},
        in signature order.
    """
    return {
        "signature_name": contract.SIGNATURE_NAME,
        contract.METADATA_INPUTS: {spec.name: _spec_json(spec) for spec in inputs},
        contract.METADATA_OUTPUTS: {spec.name: _spec_json(spec) for spec in outputs},
    }


def tf_input_signature(inputs: Sequence[contract.TensorSpec]) -> dict[str, tf.TensorSpec]:
    """tf.TensorSpecs for a signature's inputs: [B] for rank 1, [B, N] for rank 2, both dims free."""
    return {spec.name: tf.TensorSpec([None] * spec.rank, tf.dtypes.as_dtype(spec.dtype), spec.name) for spec in inputs}


def signature_function(fn: Callable[[dict[str, tf.Tensor]], Any], inputs: Sequence[contract.TensorSpec],
                       optional: Iterable[str] = ()) -> Any:
    """`fn` over a dict of `inputs`, as a tf.function whose SignatureDef gives the `optional` ones defaults.

    TensorFlow writes the tensor default arguments of a signature function into SignatureDef.defaults,
    and TF Serving (like serving.session_model) feeds those for an input a request leaves out. So each
    input is an argument named after it, the optional ones last, each defaulting to one row of its
    spec's default value ([1] or [1, 1]); `fn` must broadcast that row against the batch.

    Args:
        fn: takes {input name: tensor} (every input, defaults filled in) and returns the outputs.
        inputs: the signature's inputs.
        optional: the names of the inputs a request may leave out.

    Raises:
        ValueError: an optional name that is not one of `inputs`.
    """
    names, optional_names = [spec.name for spec in inputs], set(optional)
    if not optional_names <= set(names):
        raise ValueError(f"optional input(s) {sorted(optional_names - set(names))} are not signature inputs {names}")
    ordered = sorted(inputs, key=lambda spec: spec.name in optional_names)  # Python wants defaulted arguments last
    required = inspect.Parameter.empty
    parameters = [inspect.Parameter(spec.name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                    default=_default_row(spec) if spec.name in optional_names else required)
                  for spec in ordered]
    python_signature = inspect.Signature(parameters)

    def serve(*args: tf.Tensor, **kwargs: tf.Tensor) -> Any:
        bound = python_signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return fn(dict(bound.arguments))

    serve.__signature__ = python_signature  # type: ignore[attr-defined]
    specs = tf_input_signature(ordered)
    return tf.function(serve, input_signature=[specs[spec.name] for spec in ordered])


def _default_row(spec: contract.TensorSpec) -> tf.Tensor:
    return tf.constant(spec.default, tf.dtypes.as_dtype(spec.dtype), shape=[1] * spec.rank)


def save_signature_model(
    module: tf.Module,
    signature_fn: Callable[..., Any],
    path: pathlib.Path,
    namespace_whitelist: Iterable[str] = (),
) -> None:
    """Saves `module` as a SavedModel whose only signature is `signature_fn` under contract.SIGNATURE_NAME.

    Args:
        module: the object to track (variables, assets, the function's captures).
        signature_fn: a tf.function with an input signature, or a concrete function.
        path: the target folder (may exist and be empty, as in `publish_version`).
        namespace_whitelist: custom op namespaces to allow, e.g. (trainer.retrieval.scann_index.SCANN_NAMESPACE,).
    """
    options = tf.saved_model.SaveOptions(namespace_whitelist=list(namespace_whitelist))
    tf.saved_model.save(module, str(path), signatures={contract.SIGNATURE_NAME: signature_fn}, options=options)


def version_writer(
    module: tf.Module,
    name: str,
    metadata: Mapping[str, Any],
    warmups: Sequence[Mapping[str, np.ndarray]] = (),
    namespaces: Iterable[str] = (),
) -> Callable[[pathlib.Path], None]:
    """What `publish_version` calls to fill a version of model `name`: SavedModel, metadata, warmup requests.

    Args:
        module: the object to save; its `serve` tf.function is the only signature.
        name: the model name (of the warmup requests' model_spec).
        metadata: the export metadata asset (`write_metadata`).
        warmups: warmup requests (`write_warmup_requests`); none written when empty.
        namespaces: custom op namespaces the SavedModel may use, e.g. (SCANN_NAMESPACE,).

    The metadata gains `required_ops` (every op of the saved graph and its functions, `saved_model_ops`)
    and `custom_ops` (those in a namespace, e.g. "Scann>ScannSearchBatched"), so a TF Serving image can be
    checked against the ops a version needs before it is deployed.
    """
    def write(version_dir: pathlib.Path) -> None:
        save_signature_model(module, module.serve, version_dir, namespace_whitelist=namespaces)
        ops = saved_model_ops(version_dir)
        write_metadata(version_dir, {**metadata, REQUIRED_OPS: ops, CUSTOM_OPS: [op for op in ops if ">" in op]})
        if warmups:
            write_warmup_requests(version_dir, name, warmups)

    return write


def saved_model_ops(version_dir: pathlib.Path) -> list[str]:
    """The sorted names of every op the SavedModel in `version_dir` runs: graph nodes and function bodies.

    Calls of the SavedModel's own functions are not ops and are left out. Raises ExportError if
    `saved_model.pb` is missing or unreadable.
    """
    from tensorflow.core.protobuf import saved_model_pb2

    path = pathlib.Path(version_dir) / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(path.read_bytes())
    except (OSError, message_lib.DecodeError) as error:
        raise ExportError(f"{path} cannot be read as a SavedModel: {error}") from None
    ops: set[str] = set()
    for graph in (meta_graph.graph_def for meta_graph in saved.meta_graphs):
        functions = {function.signature.name for function in graph.library.function}
        ops.update(node.op for node in graph.node)
        ops.update(node.op for function in graph.library.function for node in function.node_def)
        ops -= functions
    return sorted(ops)


def write_warmup_requests(
    version_dir: pathlib.Path, model_name: str, requests: Sequence[Mapping[str, np.ndarray]]
) -> None:
    """Writes PredictionLog records with Predict requests that TF Serving replays on load.

    Args:
        version_dir: the version folder being written.
        model_name: the model name in the requests' model_spec.
        requests: each a dict of input name -> array with a leading batch dimension [B, ...].

    Raises:
        ExportError: no requests, or an array TensorFlow cannot convert (the input is named).
    """
    if not requests:
        raise ExportError(f"no warmup requests for {model_name}: pass at least one")
    path = warmup_file(version_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for request in requests:
            writer.write(_prediction_log(model_name, request).SerializeToString())


def read_warmup_requests(version_dir: pathlib.Path) -> list[prediction_log_pb2.PredictionLog]:
    """Reads back the warmup PredictionLogs of a version with the reader `serving.server` replays them with."""
    path = warmup_file(version_dir)
    if not path.is_file():
        raise ExportError(f"{path} does not exist: {version_dir} has no warmup requests")
    return read_warmup_logs(path)


def _prediction_log(model_name: str, inputs: Mapping[str, np.ndarray]) -> prediction_log_pb2.PredictionLog:
    request = predict_pb2.PredictRequest(
        model_spec=model_pb2.ModelSpec(name=model_name, signature_name=contract.SIGNATURE_NAME)
    )
    for name, value in inputs.items():
        try:
            request.inputs[name].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        except (TypeError, ValueError) as error:
            raise ExportError(f"warmup input {name!r} of {model_name} cannot be converted: {error}") from None
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def _rename_to_free_version(temp_dir: pathlib.Path, model_base: pathlib.Path, version: int) -> pathlib.Path:
    for _ in range(_PUBLISH_ATTEMPTS):
        target = model_base / str(version)
        if not target.exists():
            try:
                os.rename(temp_dir, target)
                return target
            except OSError as error:
                if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        version = max(version, next_version(model_base) - 1) + 1
    raise ExportError(f"no free version number under {model_base} after {_PUBLISH_ATTEMPTS} attempts")


def _versions_in_progress(model_base: pathlib.Path) -> list[int]:
    if not model_base.is_dir():
        return []
    versions = []
    for child in model_base.iterdir():
        number = child.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if child.name.startswith(TEMP_PREFIX) and number.isdigit():
            versions.append(int(number))
    return versions


def _spec_json(spec: contract.TensorSpec) -> dict[str, Any]:
    return {"dtype": spec.dtype, "rank": spec.rank, "default": spec.default}


def _non_finite_path(value: Any, path: str = "metadata") -> str | None:
    """The key path of the first NaN or infinity in a JSON-like value (JSON has no such numbers)."""
    if isinstance(value, float) and not np.isfinite(value):
        return path
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in children:
        found = _non_finite_path(child, f"{path}[{key!r}]")
        if found:
            return found
    return None


def _json_default(value: Any) -> Any:
    """`trainer.run.json_default` (NumPy, paths), plus sets (sorted) and bytes; json writes tuples itself."""
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, pathlib.PurePath):
        return str(value)
    return json_default(value)
