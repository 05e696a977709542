"""TensorProto <-> NumPy, the way TF Serving writes responses (typed value fields, not tensor_content)."""

from __future__ import annotations

from typing import Any

import numpy as np
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow.python.framework import tensor_util

from serving.errors import invalid_argument

_FIELD_BY_DTYPE: dict[int, str] = {
    types_pb2.DT_FLOAT: "float_val",
    types_pb2.DT_DOUBLE: "double_val",
    types_pb2.DT_INT32: "int_val",
    types_pb2.DT_INT16: "int_val",
    types_pb2.DT_INT8: "int_val",
    types_pb2.DT_UINT8: "int_val",
    types_pb2.DT_UINT16: "int_val",
    types_pb2.DT_INT64: "int64_val",
    types_pb2.DT_UINT32: "uint32_val",
    types_pb2.DT_UINT64: "uint64_val",
    types_pb2.DT_BOOL: "bool_val",
    types_pb2.DT_STRING: "string_val",
}
_DTYPE_BY_NUMPY: dict[str, int] = {
    "float32": types_pb2.DT_FLOAT,
    "float64": types_pb2.DT_DOUBLE,
    "int32": types_pb2.DT_INT32,
    "int16": types_pb2.DT_INT16,
    "int8": types_pb2.DT_INT8,
    "uint8": types_pb2.DT_UINT8,
    "uint16": types_pb2.DT_UINT16,
    "int64": types_pb2.DT_INT64,
    "uint32": types_pb2.DT_UINT32,
    "uint64": types_pb2.DT_UINT64,
    "bool": types_pb2.DT_BOOL,
    "float16": types_pb2.DT_HALF,
}


def dtype_enum(array: np.ndarray) -> int:
    """The TensorFlow DataType enum of a NumPy array (str / bytes / object arrays are DT_STRING)."""
    if array.dtype.kind in "USO":
        return types_pb2.DT_STRING
    try:
        return _DTYPE_BY_NUMPY[array.dtype.name]
    except KeyError as error:
        raise invalid_argument(f"Unsupported tensor dtype {array.dtype}") from error


def to_tensor_proto(value: Any) -> tensor_pb2.TensorProto:
    """Encodes an array as TF Serving encodes outputs (`Tensor::AsProtoField`).

    Args:
        value: an array-like of any shape, e.g. scores [B, K] float32 or item_ids [B, K] bytes.
    """
    array = np.asarray(value)
    proto = tensor_pb2.TensorProto(dtype=dtype_enum(array))
    proto.tensor_shape.CopyFrom(tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=int(size)) for size in array.shape]))
    flat = array.reshape(-1)
    if proto.dtype == types_pb2.DT_STRING:
        proto.string_val.extend(item.encode("utf-8") if isinstance(item, str) else bytes(item) for item in flat)
    elif proto.dtype == types_pb2.DT_HALF:
        proto.half_val.extend(flat.view(np.uint16).astype(np.int32).tolist())
    else:
        getattr(proto, _FIELD_BY_DTYPE[proto.dtype]).extend(flat.tolist())
    return proto


def from_tensor_proto(proto: tensor_pb2.TensorProto, name: str = "") -> np.ndarray:
    """Decodes a request tensor (typed fields or tensor_content), strings as an object array of bytes.

    Raises:
        ServingError: INVALID_ARGUMENT when the proto is malformed (e.g. values that do not fit its shape).
    """
    if proto.dtype == types_pb2.DT_INVALID:
        raise invalid_argument(f"tensor parsing error: {name} (no dtype)")
    field = _FIELD_BY_DTYPE.get(proto.dtype, "half_val" if proto.dtype == types_pb2.DT_HALF else "")
    elements = int(np.prod([dim.size for dim in proto.tensor_shape.dim]))
    if field and not proto.tensor_content and len(getattr(proto, field)) > elements:
        raise invalid_argument(f"tensor parsing error: {name} ({len(getattr(proto, field))} values for shape "
                               f"{[dim.size for dim in proto.tensor_shape.dim]})")
    try:
        return np.asarray(tensor_util.MakeNdarray(proto))
    except (ValueError, TypeError, IndexError) as error:
        raise invalid_argument(f"tensor parsing error: {name} ({error})") from error
