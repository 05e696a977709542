"""TF Serving's REST JSON formats: Predict rows ("instances") and columns ("inputs"), Classify/Regress examples.

Follows tensorflow_serving/util/json_tensor.cc: values are typed by the signature's
input dtypes, binary strings travel as {"b64": "..."}, an output whose name ends in
"_bytes" is written as base64, floats are written with the shortest exact repr, and the
error messages are TF Serving's.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import ServingError, invalid_argument, resource_exhausted
from serving.tensor_proto import MAX_RANK, dtype_name

B64_KEY = "b64"
BYTES_SUFFIX = "_bytes"
_MAX_ECHO_CHARS = 2000  # of a JSON value quoted in an error message
_INT_RANGES: dict[int, tuple[int, int]] = {
    types_pb2.DT_INT8: (-(2**7), 2**7 - 1),
    types_pb2.DT_UINT8: (0, 2**8 - 1),
    types_pb2.DT_INT16: (-(2**15), 2**15 - 1),
    types_pb2.DT_INT32: (-(2**31), 2**31 - 1),
    types_pb2.DT_INT64: (-(2**63), 2**63 - 1),
    types_pb2.DT_UINT32: (0, 2**32 - 1),
    types_pb2.DT_UINT64: (0, 2**64 - 1),
}
_FLOAT_MAX_INT = {types_pb2.DT_FLOAT: 2**24 - 1, types_pb2.DT_DOUBLE: 2**53 - 1}
_FLOAT_MAX = {types_pb2.DT_FLOAT: float(np.finfo(np.float32).max), types_pb2.DT_DOUBLE: float(np.finfo(np.float64).max)}
_NUMPY_BY_DTYPE: dict[int, Any] = {
    types_pb2.DT_FLOAT: np.float32, types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_INT8: np.int8,
    types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT16: np.int16, types_pb2.DT_INT32: np.int32,
    types_pb2.DT_INT64: np.int64, types_pb2.DT_UINT32: np.uint32, types_pb2.DT_UINT64: np.uint64,
    types_pb2.DT_BOOL: np.bool_, types_pb2.DT_STRING: object,
}
_TF_TYPE_NAMES = {types_pb2.DT_FLOAT: "float", types_pb2.DT_DOUBLE: "double", types_pb2.DT_STRING: "string",
                  types_pb2.DT_BOOL: "bool", types_pb2.DT_INT64: "int64", types_pb2.DT_INT32: "int32",
                  types_pb2.DT_INT16: "int16", types_pb2.DT_INT8: "int8", types_pb2.DT_UINT8: "uint8",
                  types_pb2.DT_UINT32: "uint32", types_pb2.DT_UINT64: "uint64"}

InputInfos = Mapping[str, meta_graph_pb2.TensorInfo]


class RequestFormat(enum.Enum):
    ROW = "instances"
    COLUMNAR = "inputs"


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, dict):
        return "Object"
    if isinstance(value, list):
        return "Array"
    if isinstance(value, str):
        return "String"
    return "Number"


def _dumps(value: Any) -> str:
    """A JSON value as an error message quotes it: compact, and cut short when long or deeply nested."""
    try:
        text = json.dumps(value, separators=(",", ":"))
    except RecursionError:
        return "<a value nested too deeply to print>"
    return text if len(text) <= _MAX_ECHO_CHARS else f"{text[:_MAX_ECHO_CHARS]}...<{len(text)} characters>"


def _type_error(value: Any, dtype: int) -> Exception:
    return invalid_argument(f"JSON Value: {_dumps(value)} Type: {_json_type(value)} is not of expected type: "
                            f"{_TF_TYPE_NAMES.get(dtype, str(dtype))}")


def _utf8(text: str, what: str = "") -> bytes:
    """`text` UTF-8 encoded; a lone surrogate (a JSON "\\ud800" escape) is refused naming `what`."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as error:
        prefix = f"{what}: " if what else ""
        raise invalid_argument(f"{prefix}string is not valid UTF-8 (lone surrogate)") from error


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are unique and valid UTF-8."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if not key.isascii():
            _utf8(key, f"JSON Parse error: key {_dumps(key)}")
        if key in result:
            raise invalid_argument(f"JSON Parse error: duplicate key {_dumps(key)} in an object")
        result[key] = value
    return result


def parse_document(body: bytes) -> dict[str, Any]:
    """Parses a request body that must be a JSON object (NaN and Infinity allowed, as in TF Serving; keys unique)."""
    if not body or not body.strip():
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        document = json.loads(body, object_pairs_hook=_object)
    except UnicodeDecodeError as error:
        raise invalid_argument(f"JSON Parse error: Invalid encoding in string. at offset: {error.start}") from error
    except json.JSONDecodeError as error:
        raise invalid_argument(f"JSON Parse error: {error.msg} at offset: {error.pos}") from error
    except RecursionError as error:
        raise invalid_argument("JSON Parse error: The document is nested too deeply") from error
    except ValueError as error:  # e.g. an integer of more digits than Python converts
        raise invalid_argument(f"JSON Parse error: {error}") from error
    if not isinstance(document, dict):
        raise invalid_argument(f"JSON Value: {_dumps(document)} Is not object")
    return document


def signature_name_of(document: Mapping[str, Any]) -> str:
    """The optional "signature_name" ("" when absent)."""
    name = document.get("signature_name", "")
    if not isinstance(name, str):
        raise invalid_argument(f"JSON Value: {_dumps(document)} not formatted correctly. "
                               "'signature_name' key must be a string value.")
    _utf8(name, "'signature_name'")
    return name


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(B64_KEY), str)


def _decode_b64(value: Any) -> bytes:
    if not _is_b64(value):
        raise invalid_argument(f"JSON Value: {_dumps(value)} not formatted correctly for base64 data")
    try:
        return base64.b64decode(value[B64_KEY], validate=True)
    except (binascii.Error, ValueError) as error:
        raise invalid_argument("Unable to base64 decode") from error


def _scalar(value: Any, dtype: int) -> Any:
    """One JSON leaf converted to the Python value of a `dtype` element."""
    if dtype == types_pb2.DT_STRING:
        if isinstance(value, str):
            return _utf8(value)
        if isinstance(value, dict):
            return _decode_b64(value)
        raise _type_error(value, dtype)
    if isinstance(value, dict):
        raise _type_error(value, dtype)
    if dtype == types_pb2.DT_BOOL:
        if not isinstance(value, bool):
            raise _type_error(value, dtype)
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _type_error(value, dtype)
    if dtype in _FLOAT_MAX:
        _check_lossless(value, dtype)
        return float(value)
    if dtype in _INT_RANGES:
        low, high = _INT_RANGES[dtype]
        if not isinstance(value, int) or not low <= value <= high:
            raise _type_error(value, dtype)
        return value
    raise invalid_argument(f"Conversion of JSON Value: {_dumps(value)} to type: {dtype} is not supported")


def _check_lossless(value: float, dtype: int) -> None:
    if isinstance(value, int):
        lossless = abs(value) <= _FLOAT_MAX_INT[dtype]
    else:
        lossless = not math.isfinite(value) or abs(value) <= _FLOAT_MAX[dtype]
    if not lossless:
        target = "float" if dtype == types_pb2.DT_FLOAT else "double"
        raise invalid_argument(f"Cannot convert JSON value: {_dumps(value)} to {target} without loss of precision.")


def _dense_shape(value: Any, max_rank: int) -> list[int]:
    shape: list[int] = []
    while isinstance(value, list):
        if len(shape) == max_rank:
            raise invalid_argument(f"JSON lists nested more than {max_rank} deep: a tensor has at most "
                                   f"{max_rank} dimensions here")
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def _fill(value: Any, level: int, shape: list[int], dtype: int, out: list[Any]) -> None:
    if not isinstance(value, list):
        if level != len(shape):
            raise invalid_argument(f"JSON Value: {_dumps(value)} found at incorrect level: {level + 1} in the JSON "
                                   f"DOM. Expected at level: {len(shape)}")
        out.append(_scalar(value, dtype))
        return
    if level >= len(shape):
        raise invalid_argument(f"Encountered list at unexpected level: {level} expected < {len(shape)}")
    if len(value) != shape[level]:
        raise invalid_argument(f"Encountered list at unexpected size: {len(value)} at level: {level} "
                               f"expected size: {shape[level]}")
    for item in value:
        _fill(item, level + 1, shape, dtype, out)


def tensor_from_json(value: Any, dtype: int, max_rank: int = MAX_RANK) -> np.ndarray:
    """A dense tensor from nested JSON lists (all leaves at the same depth), typed as the signature says.

    Args:
        value: nested lists of JSON values, e.g. [[1, 2], [3, 4]] for a [2, 2] tensor.
        dtype: the signature's DataType for it.
        max_rank: the most dimensions allowed (one less for an instance that gets a batch dimension).
    """
    shape = _dense_shape(value, max_rank)
    values: list[Any] = []
    _fill(value, 0, shape, dtype, values)
    array = np.empty(len(values), dtype=_NUMPY_BY_DTYPE.get(dtype, object))
    array[:] = values
    return array.reshape(shape)


def parse_predict(document: Mapping[str, Any], infos: InputInfos) -> tuple[dict[str, np.ndarray], RequestFormat]:
    """The input tensors of a Predict request body, and which format it used.

    Args:
        document: the parsed body.
        infos: the signature's inputs (alias -> TensorInfo), which type the JSON values.
    """
    if not infos:
        raise invalid_argument("Failed to get input map for signature")
    for name in sorted(infos):
        if infos[name].dtype not in _NUMPY_BY_DTYPE:
            raise invalid_argument(f"Input: {name} of the signature has dtype {dtype_name(infos[name].dtype)}, "
                                   "which a JSON request cannot carry (only bool, string, integer and "
                                   "floating-point tensors)")
    has_rows, has_columns = RequestFormat.ROW.value in document, RequestFormat.COLUMNAR.value in document
    if has_rows and has_columns:
        raise invalid_argument(f"JSON Value: {_dumps(document)} Not formatted correctly expecting only one of "
                               "'inputs' or 'instances' keys to exist ")
    if has_rows:
        return _parse_instances(document, infos), RequestFormat.ROW
    if has_columns:
        return _parse_inputs(document[RequestFormat.COLUMNAR.value], infos), RequestFormat.COLUMNAR
    raise invalid_argument("Missing 'inputs' or 'instances' key")


def _is_named_object(value: Any) -> bool:
    return isinstance(value, dict) and not _is_b64(value)


def _batch_major(info: meta_graph_pb2.TensorInfo) -> bool:
    shape = info.tensor_shape
    return not shape.unknown_rank and len(shape.dim) > 0 and shape.dim[0].size == -1


def check_rows(document: Mapping[str, Any], infos: InputInfos | None, max_rows: int) -> None:
    """Refuses a body of more rows than `max_rows` from list lengths alone, before any value is converted.

    Rows are the "instances", the "examples", or dimension 0 of an "inputs" list whose signature
    input is batch-major ([-1, ...]).

    Args:
        document: the parsed body.
        infos: the signature's inputs (None for Classify / Regress).
        max_rows: the server's --max_request_batch_size.

    Raises:
        ServingError: RESOURCE_EXHAUSTED naming where the rows are.
    """
    counts = {f"'{key}'": len(document[key]) for key in ("instances", "examples")
              if isinstance(document.get(key), list)}
    columns: Any = document.get(RequestFormat.COLUMNAR.value)
    if infos and not _is_named_object(columns):
        columns = {next(iter(infos)): columns} if len(infos) == 1 else {}
    if infos:
        counts.update({f"input '{alias}'": len(value) for alias, value in columns.items()
                       if isinstance(value, list) and alias in infos and _batch_major(infos[alias])})
    for where, count in sorted(counts.items()):
        if count > max_rows:
            raise resource_exhausted(f"{where} has {count} rows, over this server's limit of {max_rows} "
                                     "(--max_request_batch_size)")


def _parse_instances(document: Mapping[str, Any], infos: InputInfos) -> dict[str, np.ndarray]:
    instances = document[RequestFormat.ROW.value]
    if not isinstance(instances, list):
        raise invalid_argument(f"JSON Value: {_dumps(document)} Excepting 'instances' to be an list/array")
    if not instances:
        raise invalid_argument(f"JSON Value: {_dumps(document)} No values in 'instances' array")
    named = _is_named_object(instances[0])
    if not named and len(infos) > 1:
        raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input tensors "
                               "required as per tensorinfo_map")
    rows: dict[str, list[np.ndarray]] = {}
    for index, instance in enumerate(instances):
        if named != _is_named_object(instance):
            expected = "object but got list" if named else "value/list but got object"
            raise invalid_argument(f"Expecting {expected} at item {index} of input list")
        items = instance if named else {next(iter(infos)): instance}
        if named and set(items) != set(infos):
            raise invalid_argument(f"Failed to process element: {index} of 'instances' list. JSON object: "
                                   f"{_dumps(instance)} keys must be equal to: {','.join(sorted(infos))}")
        for name, value in items.items():
            rows.setdefault(name, []).append(_instance_item(index, name, value, infos, rows.get(name)))
    return {name: np.stack(items) for name, items in rows.items()}


def _instance_item(index: int, name: str, value: Any, infos: InputInfos, previous: list[np.ndarray] | None
                   ) -> np.ndarray:
    try:
        tensor = tensor_from_json(value, infos[name].dtype, MAX_RANK - 1)
    except ServingError as error:
        raise invalid_argument(f"Failed to process element: {index} key: {name} of 'instances' list. "
                               f"Error: {error.message}") from error
    if previous:
        first = previous[0]
        if first.size != tensor.size:
            raise invalid_argument(f"Failed to process element: {index} key: {name} of 'instances' list. Error: "
                                   f"Expecting tensor size: {first.size} but got: {tensor.size}")
        if first.shape != tensor.shape:
            raise invalid_argument(f"Failed to process element: {index} key: {name} of 'instances' list. Error: "
                                   f"Expecting shape {list(first.shape)} but got: {list(tensor.shape)}")
    return tensor


def _parse_inputs(value: Any, infos: InputInfos) -> dict[str, np.ndarray]:
    if not _is_named_object(value):
        if len(infos) > 1:
            raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input tensors "
                                   "required as per tensorinfo_map")
        name = next(iter(infos))
        return {name: _column(name, value, infos)}
    extra = sorted(set(value) - set(infos))
    if extra:
        raise invalid_argument(f"input size does not match signature: {len(value)}!={len(infos)} "
                               f"len({{{','.join(sorted(value))}}}) != len({{{','.join(sorted(infos))}}}). "
                               f"Sent extra: {{{','.join(extra)}}}. Missing but required: "
                               f"{{{','.join(sorted(set(infos) - set(value)))}}}.")
    tensors = {}
    for name in sorted(infos):
        if name not in value:
            raise invalid_argument(f"Missing named input: {name} in 'inputs' object.")
        tensors[name] = _column(name, value[name], infos)
    return tensors


def _column(name: str, value: Any, infos: InputInfos) -> np.ndarray:
    try:
        return tensor_from_json(value, infos[name].dtype)
    except ServingError as error:
        raise invalid_argument(f"input '{name}': {error.message}") from error


def _json_values(name: str, array: np.ndarray) -> Any:
    """An output array as nested Python lists ready for json.dumps (floats in their shortest exact repr)."""
    if array.dtype.kind in "SO" or array.dtype.kind == "U":
        as_b64 = name.endswith(BYTES_SUFFIX)
        flat: list[Any] = [_string_value(item, as_b64) for item in array.reshape(-1)]
    elif array.dtype.kind == "f":
        flat = [_float_value(text) for text in array.reshape(-1).astype(str)]
    else:
        flat = array.reshape(-1).tolist()
    if array.ndim == 0:
        return flat[0]
    nested = np.empty(len(flat), dtype=object)
    nested[:] = flat
    return nested.reshape(array.shape).tolist()


def _float_value(text: str) -> float:
    return float(text)  # the shortest repr of a float32 read back as a double prints the same digits


def _string_value(item: Any, as_b64: bool) -> Any:
    data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
    if not as_b64:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            pass  # not text: only base64 keeps it intact
    return {B64_KEY: base64.b64encode(data).decode("ascii")}


def predict_response(outputs: Mapping[str, np.ndarray], request_format: RequestFormat) -> dict[str, Any]:
    """The Predict response body: {"predictions": [...]} for rows, {"outputs": ...} for columns."""
    if not outputs:
        raise invalid_argument("Cannot convert empty tensor map to JSON")
    names = sorted(outputs)
    if request_format is RequestFormat.COLUMNAR:
        if len(names) == 1:
            return {"outputs": _json_values(names[0], outputs[names[0]])}
        return {"outputs": {name: _json_values(name, outputs[name]) for name in names}}
    batch_size = -1
    for name in names:
        if outputs[name].ndim == 0:
            raise invalid_argument(f"Tensor name: {name} has no shape information ")
        if batch_size >= 0 and outputs[name].shape[0] != batch_size:
            raise invalid_argument(f"Tensor name: {name} has inconsistent batch size: {outputs[name].shape[0]} "
                                   f"expecting: {batch_size}")
        batch_size = outputs[name].shape[0]
    columns = {name: _json_values(name, outputs[name]) for name in names}
    if len(names) == 1:
        return {"predictions": columns[names[0]]}
    return {"predictions": [{name: columns[name][row] for name in names} for row in range(batch_size)]}


def dumps(body: Mapping[str, Any]) -> bytes:
    """Serialises a response body (NaN and Infinity written as TF Serving writes them)."""
    return json.dumps(body, allow_nan=True).encode("utf-8")


def _feature(name: str, value: Any) -> feature_pb2.Feature:
    values = value if isinstance(value, list) else [value]
    kinds: set[str] = set()
    feature = feature_pb2.Feature()
    for item in values:
        kind, converted = _feature_value(name, item)
        if kinds and kind not in kinds:
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {next(iter(kinds))}")
        kinds.add(kind)
        getattr(feature, f"{kind}_list").value.append(converted)
    return feature


def _feature_value(name: str, item: Any) -> tuple[str, Any]:
    if isinstance(item, bool):
        return "int64", int(item)
    if isinstance(item, str):
        return "bytes", _utf8(item, f"Feature: {name}")
    if _is_b64(item):
        return "bytes", _decode_b64(item)
    if isinstance(item, float):
        _check_lossless(item, types_pb2.DT_FLOAT)
        return "float", item
    if isinstance(item, int):
        if not _INT_RANGES[types_pb2.DT_INT64][0] <= item <= _INT_RANGES[types_pb2.DT_INT64][1]:
            raise invalid_argument(f"Feature: {name} has uint64 element. Only int64 is supported.")
        return "int64", item
    raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {_json_type(item)}")


def _example(value: Any) -> example_pb2.Example:
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {_json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        example.features.feature[name].CopyFrom(_feature(name, content))
    return example


def parse_examples(document: Mapping[str, Any], method: str) -> input_pb2.Input:
    """The Input of a Classify or Regress request body: {"context": {...}?, "examples": [{...}, ...]}."""
    request_input = input_pb2.Input()
    examples = document.get("examples")
    if "examples" not in document:
        raise invalid_argument(f"JSON Value: {_dumps(document)} When method is {method}, key 'examples' is expected "
                               "and was not found")
    if not isinstance(examples, list):
        raise invalid_argument(f"JSON Value: {_dumps(document)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise invalid_argument(f"JSON Value: {_dumps(document)} 'examples' value is an empty array")
    if "context" in document:
        request_input.example_list_with_context.context.CopyFrom(_example(document["context"]))
        request_input.example_list_with_context.examples.extend(_example(item) for item in examples)
    else:
        request_input.example_list.examples.extend(_example(item) for item in examples)
    return request_input


def classification_response(result: classification_pb2.ClassificationResult) -> dict[str, Any]:
    """{"results": [[[label, score], ...] per example]}."""
    return {"results": [[[c.label, _float_value(str(np.float32(c.score)))] for c in item.classes]
                        for item in result.classifications]}


def regression_response(result: regression_pb2.RegressionResult) -> dict[str, Any]:
    """{"results": [value per example]}."""
    return {"results": [_float_value(str(np.float32(item.value))) for item in result.regressions]}

