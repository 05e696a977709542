"""Requests built from a model's metadata, and checked responses, for the thin client.

The server's `GetModelMetadata` gives each model's `serving_default` SignatureDef: its
input names, dtypes and ranks. `build_inputs` turns per-user feature dicts into one
tensor per signature input, so every input the signature requires is present (TF Serving
rejects a request that lacks one) and optional features take their defaults: the export
metadata's defaults when the client has them, else the serving contract's, else the
dtype's zero ("" for strings).

Variable-length rows (histories) are left-padded with "" to one more than the longest
row, so every row starts with the pad: TF Serving's batching pads concurrent requests to a
common width with each tensor's first element, which then is always "".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

import numpy as np

from recsys_common import contract
from serving._protos.tensorflow.core.framework import tensor_pb2, types_pb2
from serving._protos.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2
from serving.client_errors import (
    InvalidArgumentError,
    InvalidRequestError,
    ModelNotFoundError,
    UnexpectedResponseError,
)
from serving.tensor_proto import TensorConversionError, dtype_name, from_tensor_proto, to_tensor_proto

_SIGNATURE_DEF_MAP_TYPE = "tensorflow.serving.SignatureDefMap"
_CONTRACT_DEFAULTS: dict[str, contract.Default] = {
    spec.name: spec.default for specs in contract.INPUTS_BY_MODEL.values() for spec in specs
}
_DTYPE_ZERO: dict[int, contract.Default] = {types_pb2.DT_STRING: "", types_pb2.DT_FLOAT: 0.0,
                                            types_pb2.DT_DOUBLE: 0.0}
# The integer dtypes whose range the client checks (a Python int beyond it cannot be sent), by DataType.
_INT_BOUNDS: dict[int, tuple[int, int]] = {
    types_pb2.DT_INT64: (contract.INT64_MIN, contract.INT64_MAX), types_pb2.DT_INT32: (-(2**31), 2**31 - 1)}
# The contract's int64 features (age, request_time, watch_history_times): checked before any RPC.
CONTRACT_INT64_FEATURES = frozenset(
    spec.name for specs in contract.INPUTS_BY_MODEL.values() for spec in specs if spec.dtype == "int64")


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One input of a served signature.

    Attributes:
        name: the input key.
        dtype: the TensorFlow DataType enum value.
        rank: number of dimensions including the batch one; None when the signature leaves it open.
        default: the value sent when the caller gives none (the pad value for rank 2).
    """

    name: str
    dtype: int
    rank: int | None
    default: contract.Default


@dataclasses.dataclass(frozen=True)
class ModelSignature:
    """The `serving_default` signature of one served model."""

    model: str
    inputs: dict[str, InputSpec]
    outputs: dict[str, int]


def parse_signature(
    model: str,
    response: get_model_metadata_pb2.GetModelMetadataResponse,
    defaults: Mapping[str, contract.Default] | None = None,
) -> ModelSignature:
    """Reads the `serving_default` SignatureDef from a GetModelMetadata response.

    Args:
        model: the model name (for messages).
        response: the server's answer to a request for metadata_field "signature_def".
        defaults: input defaults from the export metadata; they win over the contract's.

    Raises:
        ModelNotFoundError: the model has no `serving_default` signature.
        UnexpectedResponseError: the response holds no SignatureDefMap.
    """
    if contract.SIGNATURE_DEF_FIELD not in response.metadata:
        raise UnexpectedResponseError(
            f"model {model!r}: GetModelMetadata returned no {contract.SIGNATURE_DEF_FIELD}", model=model
        )
    packed = response.metadata[contract.SIGNATURE_DEF_FIELD]
    if not packed.type_url.endswith(_SIGNATURE_DEF_MAP_TYPE):
        raise UnexpectedResponseError(f"model {model!r}: signature_def holds {packed.type_url!r}", model=model)
    signatures = get_model_metadata_pb2.SignatureDefMap.FromString(packed.value).signature_def
    if contract.SIGNATURE_NAME not in signatures:
        raise ModelNotFoundError(
            f"model {model!r} has no signature {contract.SIGNATURE_NAME!r} (it has {sorted(signatures)})", model=model
        )
    signature = signatures[contract.SIGNATURE_NAME]
    chosen_defaults = {**_CONTRACT_DEFAULTS, **(defaults or {})}
    inputs = {
        name: InputSpec(name, info.dtype, _rank(info), chosen_defaults.get(name, _DTYPE_ZERO.get(info.dtype, 0)))
        for name, info in sorted(signature.inputs.items())
    }
    return ModelSignature(model, inputs, {name: info.dtype for name, info in signature.outputs.items()})


def build_inputs(
    signature: ModelSignature,
    rows: Sequence[Mapping[str, Any]],
    batch_inputs: Mapping[str, np.ndarray] | None = None,
    encoded: MutableMapping[InputSpec, tensor_pb2.TensorProto] | None = None,
) -> dict[str, tensor_pb2.TensorProto]:
    """One tensor per signature input for a batch of users.

    Args:
        signature: the model's signature.
        rows: per user, feature name -> value (a scalar for rank-1 inputs, a sequence for rank 2).
        batch_inputs: whole-batch arrays [B, ...] that are sent as they are (e.g. candidate_ids).
        encoded: the feature tensors already built for these same `rows`, by input; those built here
            are added. The models of one request share their user inputs, which are so encoded once.

    Raises:
        InvalidRequestError: a value of the wrong type or shape, named by feature (an `InvalidArgumentError`
            for an integer out of its dtype's range).
    """
    batch_inputs = batch_inputs or {}
    encoded = {} if encoded is None else encoded
    tensors = {}
    for name, spec in signature.inputs.items():
        if name in batch_inputs:
            tensors[name] = _tensor(signature, spec, batch_inputs[name])
            continue
        if spec not in encoded:
            encoded[spec] = _tensor(signature, spec, _column(spec, rows, signature.model))
        tensors[name] = encoded[spec]
    return tensors


def _tensor(signature: ModelSignature, spec: InputSpec, values: Any) -> tensor_pb2.TensorProto:
    try:
        return to_tensor_proto(values, spec.dtype)
    except TensorConversionError as error:
        raise InvalidRequestError(f"feature {spec.name!r} for model {signature.model!r}: {error}",
                                  model=signature.model) from None


def predict_request(
    model: str, inputs: Mapping[str, tensor_pb2.TensorProto], version_label: str | None = None
) -> predict_pb2.PredictRequest:
    """A PredictRequest for the `serving_default` signature of `model` (optionally a labelled version)."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = contract.SIGNATURE_NAME
    if version_label:
        request.model_spec.version_label = version_label
    for name, tensor in inputs.items():
        request.inputs[name].CopyFrom(tensor)
    return request


def output(response: predict_pb2.PredictResponse, model: str, name: str, batch: int) -> np.ndarray:
    """A named output of a Predict response, checked to be [batch, N] (every output of the contract is).

    Raises:
        UnexpectedResponseError: the output is missing or has another shape.
    """
    if name not in response.outputs:
        raise UnexpectedResponseError(
            f"model {model!r} returned no output {name!r} (it returned {sorted(response.outputs)})", model=model
        )
    try:
        array = from_tensor_proto(response.outputs[name])
    except TensorConversionError as error:
        raise UnexpectedResponseError(f"model {model!r}, output {name!r}: {error}", model=model) from None
    if array.ndim != 2 or array.shape[0] != batch:
        raise UnexpectedResponseError(
            f"model {model!r}, output {name!r}: expected 2 dimensions with batch {batch}, got shape "
            f"{list(array.shape)}",
            model=model,
        )
    return array


def check_features(rows: Sequence[Mapping[str, Any]], signatures: Sequence[ModelSignature]) -> None:
    """Rejects feature names that no signature takes (a typo would otherwise be dropped silently).

    The contract's ranking-only inputs are accepted even where the served ranker does not read them
    (its signature then lacks them, and they are not sent).

    Raises:
        InvalidRequestError: naming the unknown features and listing the accepted ones.
    """
    accepted = ({name for signature in signatures for name in signature.inputs} - {contract.CANDIDATE_IDS}) | {
        spec.name for spec in contract.RANKING_CONTEXT_INPUTS}
    unknown = sorted({name for row in rows for name in row} - accepted)
    if unknown:
        raise InvalidRequestError(f"unknown feature(s) {unknown}; the served models accept {sorted(accepted)}")


def _column(spec: InputSpec, rows: Sequence[Mapping[str, Any]], model: str) -> np.ndarray:
    values = [row.get(spec.name) for row in rows]
    if spec.rank == 1:
        return _scalars(spec, values, model)
    if spec.rank == 2:
        return _left_padded(spec, values, model)
    if all(value is None for value in values):
        raise InvalidRequestError(
            f"model {model!r} takes input {spec.name!r} with rank {spec.rank}; the client cannot default it: "
            "pass it explicitly",
            model=model,
        )
    return np.asarray(values)


def _scalars(spec: InputSpec, values: list[Any], model: str) -> np.ndarray:
    column = []
    for value in values:
        value = spec.default if value is None else value
        _check_scalar(spec, value, model)
        column.append(value)
    return np.asarray(column, dtype=object if spec.dtype == types_pb2.DT_STRING else None)


def _left_padded(spec: InputSpec, values: list[Any], model: str) -> np.ndarray:
    lists = [_sequence(spec, value, model) for value in values]
    width = max((len(items) for items in lists), default=0) + 1
    padded = np.full((len(lists), width), spec.default, dtype=object if spec.dtype == types_pb2.DT_STRING else None)
    for row, items in enumerate(lists):
        for item in items:
            _check_scalar(spec, item, model)
        if items:
            padded[row, width - len(items):] = items
    return padded


def _sequence(spec: InputSpec, value: Any, model: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise InvalidRequestError(
            f"feature {spec.name!r} for model {model!r} expects a list of values, got {type(value).__name__} "
            f"{value!r}",
            model=model,
        )
    return list(value)


def _check_scalar(spec: InputSpec, value: Any, model: str) -> None:
    if spec.dtype == types_pb2.DT_STRING:
        ok = isinstance(value, (str, bytes, np.str_, np.bytes_))
    elif spec.dtype in (types_pb2.DT_FLOAT, types_pb2.DT_DOUBLE):
        ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not ok:
        raise InvalidRequestError(
            f"feature {spec.name!r} for model {model!r} expects {dtype_name(spec.dtype)} values, got "
            f"{type(value).__name__} {value!r}",
            model=model,
        )
    check_int_range(spec.name, value, spec.dtype, where=f" for model {model!r}")


def check_int_range(name: str, value: Any, dtype: int = types_pb2.DT_INT64, where: str = "") -> None:
    """Refuses an integer `value` of feature `name` that the integer `dtype` cannot hold; other values
    (and other dtypes) are left to the type checks.

    Raises:
        InvalidArgumentError: naming the feature (`where` adds e.g. " of user 3"), the value and the range.
    """
    bounds = _INT_BOUNDS.get(dtype)
    if bounds is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        return
    low, high = bounds
    if not low <= value <= high:
        raise InvalidArgumentError(f"feature {name!r}{where}: {value} is out of range for {dtype_name(dtype)}: it "
                                   f"must be an integer in [{low}, {high}]", argument=name)


def _rank(info: Any) -> int | None:
    shape = info.tensor_shape
    return None if shape.unknown_rank else len(shape.dim)
