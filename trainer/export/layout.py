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
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

from recsys_common import contract
from recsys_common.layout import version_directories, warmup_file
from recsys_common.warmup_log import read_warmup_logs
from trainer.run import json_default

TEMP_PREFIX = ".tmp-"
_PUBLISH_ATTEMPTS = 5


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
    temp_dir = model_base / f"{TEMP_PREFIX}{version}-{secrets.token_hex(4)}"
    temp_dir.mkdir()
    try:
        write(temp_dir)
        if not any(temp_dir.iterdir()):
            raise ExportError(f"export into {model_base} wrote nothing; no version was published")
        return _rename_to_free_version(temp_dir, model_base, version)
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)


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
    """
    def write(version_dir: pathlib.Path) -> None:
        save_signature_model(module, module.serve, version_dir, namespace_whitelist=namespaces)
        write_metadata(version_dir, metadata)
        if warmups:
            write_warmup_requests(version_dir, name, warmups)

    return write


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
