"""NumPy arrays to and from `TensorProto` without TensorFlow (for the thin client).

Covers the dtypes of the serving contract and the common numeric ones. Numeric tensors
are sent as `tensor_content` (little-endian bytes, as `tf.make_tensor_proto` does);
both `tensor_content` and the typed `*_val` fields are read, including TensorFlow's
short form where a single value stands for a whole tensor of that value.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from serving._protos.tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2

DataType = int

# DataType -> (NumPy dtype, TensorProto field holding the values).
_NUMERIC: dict[DataType, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}


class TensorConversionError(ValueError):
    """A value that cannot be a tensor of the requested dtype; the message says why."""


def dtype_name(dtype: DataType) -> str:
    """TensorFlow's name of a DataType enum value, e.g. "DT_STRING"."""
    return str(types_pb2.DataType.Name(dtype)) if dtype in types_pb2.DataType.values() else f"DataType({dtype})"


def to_tensor_proto(values: np.ndarray | Sequence[object], dtype: DataType) -> tensor_pb2.TensorProto:
    """Encodes an array as a TensorProto of `dtype`.

    Args:
        values: an array of any shape; for DT_STRING, str (UTF-8 encoded) or bytes items.
        dtype: the DataType to send.

    Raises:
        TensorConversionError: the values do not fit the dtype, or the dtype is not supported.
    """
    array = np.asarray(values, dtype=object if dtype == types_pb2.DT_STRING else None)
    proto = tensor_pb2.TensorProto(dtype=cast(Any, dtype), tensor_shape=_shape_proto(array.shape))
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(_as_bytes(item) for item in array.reshape(-1))
        return proto
    numpy_dtype = _numeric_dtype(dtype)
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and numpy_dtype.kind in "biu"):
        raise TensorConversionError(f"cannot send {array.dtype} values as {dtype_name(dtype)}")
    converted = array.astype(numpy_dtype)
    if numpy_dtype.kind in "iu" and not np.array_equal(converted, array):
        raise TensorConversionError(f"values out of range for {dtype_name(dtype)}")
    proto.tensor_content = converted.tobytes()
    return proto


def from_tensor_proto(proto: tensor_pb2.TensorProto) -> np.ndarray:
    """Decodes a TensorProto: numbers as their NumPy dtype, strings as an object array of str.

    Strings that are not UTF-8 stay bytes.

    Raises:
        TensorConversionError: unsupported dtype, or a value count that does not match the shape.
    """
    shape = tuple(dim.size for dim in proto.tensor_shape.dim)
    count = int(np.prod(shape, dtype=np.int64))
    if proto.dtype == types_pb2.DT_STRING:
        flat = np.empty(len(proto.string_val), dtype=object)
        flat[:] = [_as_text(item) for item in proto.string_val]
    else:
        numpy_dtype = _numeric_dtype(proto.dtype)
        if proto.tensor_content:
            flat = np.frombuffer(proto.tensor_content, dtype=numpy_dtype)
        else:
            flat = np.asarray(getattr(proto, _NUMERIC[proto.dtype][1]), dtype=numpy_dtype)
    return _reshaped(flat, shape, count, proto.dtype)


def _reshaped(flat: np.ndarray, shape: tuple[int, ...], count: int, dtype: DataType) -> np.ndarray:
    if flat.size == count:
        return flat.reshape(shape)
    if flat.size == 1:
        return np.full(shape, flat[0], dtype=flat.dtype)
    if flat.size == 0 and dtype != types_pb2.DT_STRING:
        return np.zeros(shape, dtype=flat.dtype)
    raise TensorConversionError(f"{dtype_name(dtype)} tensor of shape {list(shape)} holds {flat.size} values")


def _numeric_dtype(dtype: DataType) -> np.dtype:
    if dtype not in _NUMERIC:
        raise TensorConversionError(f"unsupported tensor dtype {dtype_name(dtype)}")
    return _NUMERIC[dtype][0]


def _shape_proto(shape: tuple[int, ...]) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape])


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):  # np.str_ included
        return item.encode("utf-8")
    raise TensorConversionError(f"expected a string, got {type(item).__name__} {item!r}")


def _as_text(item: bytes) -> str | bytes:
    try:
        return item.decode("utf-8")
    except UnicodeDecodeError:
        return item
