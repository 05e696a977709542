"""NumPy arrays to and from `TensorProto`: the one codec of the server and the thin client (no TensorFlow).

Works on TensorFlow's TensorProto messages and on the vendored ones alike (the fields are
the same). Writing: numbers as `tensor_content` (little-endian bytes, as `tf.make_tensor_proto`
does), or as the typed `*_val` fields (`typed=True`, as TF Serving writes its outputs).
Reading: `tensor_content` or the typed fields, including TensorFlow's short forms where one
value (or none) stands for a whole tensor.

Reading checks a tensor before anything is allocated for it, with TensorFlow's own rules
(`Tensor::FromProto`) made strict: a known dtype, every dimension >= 0, at most MAX_RANK
dimensions, dimensions whose product (zeros counted as 1) stays within
MAX_NOMINAL_ELEMENTS, `tensor_content` exactly as long as the shape needs, and as many typed values
as elements (or one or none, the short forms). A cap on the decoded size bounds what the
short forms and one-byte varints could expand to: a 232-byte tensor declaring shape [1e9]
is refused, not filled.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from serving._protos.tensorflow.core.framework import tensor_pb2, types_pb2

DataType = int
MAX_RANK = 254  # TensorShape's limit
# Most elements a shape may name, zero-sized dimensions counted as 1: NumPy refuses a larger shape even when it
# holds no elements (its nominal byte size would overflow a 64-bit size at 16 bytes an element).
MAX_NOMINAL_ELEMENTS = 2**59
# What one string element costs once decoded beyond its own bytes (an object array's pointer).
STRING_ELEMENT_BYTES = 8

# DataType -> (NumPy dtype, TensorProto field holding the values).
_NUMERIC: dict[DataType, tuple[np.dtype, str]] = {
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_HALF: (np.dtype("<f2"), "half_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
    types_pb2.DT_INT16: (np.dtype("<i2"), "int_val"),
    types_pb2.DT_INT8: (np.dtype("i1"), "int_val"),
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_UINT16: (np.dtype("<u2"), "int_val"),
    types_pb2.DT_UINT32: (np.dtype("<u4"), "uint32_val"),
    types_pb2.DT_UINT64: (np.dtype("<u8"), "uint64_val"),
    types_pb2.DT_BOOL: (np.dtype("?"), "bool_val"),
}
_DTYPE_BY_NUMPY: dict[str, DataType] = {numpy_dtype.name: dtype for dtype, (numpy_dtype, _) in _NUMERIC.items()}


class TensorConversionError(ValueError):
    """A value that cannot be a tensor of the requested dtype, or a malformed TensorProto; the message says why."""


class TensorTooLargeError(TensorConversionError):
    """A TensorProto whose decoded size would exceed the caller's cap."""


def dtype_name(dtype: DataType) -> str:
    """TensorFlow's name of a DataType enum value, e.g. "DT_STRING"."""
    return str(types_pb2.DataType.Name(dtype)) if dtype in types_pb2.DataType.values() else f"DataType({dtype})"


def dtype_of(array: np.ndarray) -> DataType:
    """The DataType of a NumPy array (str / bytes / object arrays are DT_STRING).

    Raises:
        TensorConversionError: a dtype TensorFlow has no DataType for (e.g. complex).
    """
    if array.dtype.kind in "USO":
        return types_pb2.DT_STRING
    if array.dtype.name not in _DTYPE_BY_NUMPY:
        raise TensorConversionError(f"unsupported tensor dtype {array.dtype}")
    return _DTYPE_BY_NUMPY[array.dtype.name]


def to_tensor_proto(values: np.ndarray | Sequence[object], dtype: DataType | None = None, *,
                    out: Any = None, typed: bool = False) -> Any:
    """Encodes an array as a TensorProto.

    Args:
        values: an array of any shape, e.g. scores [B, K] float32; for DT_STRING, str (UTF-8 encoded) or
            bytes items.
        dtype: the DataType to send; None takes the array's own.
        out: a TensorProto to fill (TensorFlow's or the vendored class); None makes a vendored one.
        typed: write numbers into the typed `*_val` fields (TF Serving's responses) instead of tensor_content.

    Returns:
        The filled TensorProto (`out` when given).

    Raises:
        TensorConversionError: the values do not fit the dtype, or the dtype is not supported.
    """
    array = np.asarray(values, dtype=object if dtype == types_pb2.DT_STRING else None)
    dtype = dtype_of(array) if dtype is None else dtype
    proto = tensor_pb2.TensorProto() if out is None else out
    proto.Clear()
    proto.dtype = cast(Any, dtype)
    for size in array.shape:
        proto.tensor_shape.dim.add(size=int(size))
    if dtype == types_pb2.DT_STRING:
        proto.string_val.extend(_as_bytes(item) for item in array.reshape(-1))
        return proto
    numpy_dtype = _numeric_dtype(dtype)
    converted = _converted(array, numpy_dtype, dtype)
    if not typed:
        proto.tensor_content = converted.tobytes()
    elif dtype == types_pb2.DT_HALF:
        proto.half_val.extend(converted.reshape(-1).view(np.uint16).astype(np.int32).tolist())
    else:
        getattr(proto, _NUMERIC[dtype][1]).extend(converted.reshape(-1).tolist())
    return proto


def _converted(array: np.ndarray, numpy_dtype: np.dtype, dtype: DataType) -> np.ndarray:
    if array.dtype == numpy_dtype:
        return array
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and numpy_dtype.kind in "biu"):
        raise TensorConversionError(f"cannot send {array.dtype} values as {dtype_name(dtype)}")
    converted = array.astype(numpy_dtype)
    if numpy_dtype.kind in "iu" and not np.array_equal(converted, array):
        raise TensorConversionError(f"values out of range for {dtype_name(dtype)}")
    return converted


def decoded_size(proto: Any, name: str = "") -> int:
    """The bytes `from_tensor_proto` would allocate for this proto, after checking its dtype and shape.

    Raises:
        TensorConversionError: unsupported dtype, a shape that is not a valid tensor shape, or values that
            do not fit the shape (see the module docstring).
    """
    shape = _checked_shape(proto, name)
    count = math.prod(shape)
    if proto.dtype == types_pb2.DT_STRING:
        if proto.tensor_content:
            raise TensorConversionError(f"{_label(name)}DT_STRING tensors cannot use tensor_content")
        _check_value_count(len(proto.string_val), count, shape, proto.dtype, name)
        return count * STRING_ELEMENT_BYTES + sum(len(item) for item in proto.string_val)
    numpy_dtype = _numeric_dtype(proto.dtype, name)
    size = count * numpy_dtype.itemsize
    if proto.tensor_content:
        if len(proto.tensor_content) != size:
            raise TensorConversionError(f"{_label(name)}{dtype_name(proto.dtype)} tensor of shape {list(shape)} "
                                        f"needs {size} bytes of tensor_content, got {len(proto.tensor_content)}")
    else:
        _check_value_count(len(getattr(proto, _NUMERIC[proto.dtype][1])), count, shape, proto.dtype, name)
    return size


def from_tensor_proto(proto: Any, name: str = "", *, max_bytes: int | None = None, text: bool = True) -> np.ndarray:
    """Decodes a TensorProto, checked before anything is allocated (see the module docstring).

    Args:
        proto: a TensorProto (TensorFlow's or the vendored class).
        name: the input or output name, for messages.
        max_bytes: refuse a tensor that would take more than this once decoded (None: no cap).
        text: strings as str where they are UTF-8 (bytes otherwise); False keeps every string bytes.

    Returns:
        The array: numbers as their NumPy dtype, strings as an object array.

    Raises:
        TensorTooLargeError: the decoded tensor would exceed `max_bytes`.
        TensorConversionError: unsupported dtype, invalid shape, or values that do not fit the shape.
    """
    size = decoded_size(proto, name)
    if max_bytes is not None and size > max_bytes:
        raise TensorTooLargeError(f"{_label(name)}{dtype_name(proto.dtype)} tensor of shape "
                                  f"{[dim.size for dim in proto.tensor_shape.dim]} would take {size} bytes once "
                                  f"decoded, over the limit of {max_bytes}")
    return decode_checked(proto, text=text)


def decode_checked(proto: Any, *, text: bool = True) -> np.ndarray:
    """Decodes a TensorProto that `decoded_size` has already passed (for callers that cap sizes themselves).

    Args:
        proto: a TensorProto that `decoded_size` accepted.
        text: strings as str where they are UTF-8 (bytes otherwise); False keeps every string bytes.

    Returns:
        The array: numbers as their NumPy dtype, strings as an object array.
    """
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    if proto.dtype == types_pb2.DT_STRING:
        flat = np.empty(len(proto.string_val), dtype=object)
        flat[:] = [_as_text(item) for item in proto.string_val] if text else list(proto.string_val)
        return _reshaped(flat, shape, "" if text else b"")
    numpy_dtype, field = _NUMERIC[proto.dtype]
    if proto.tensor_content:
        return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape)
    if proto.dtype == types_pb2.DT_HALF:
        flat = np.asarray(proto.half_val, dtype=np.int32).astype(np.uint16).view(np.float16)
    else:
        flat = np.asarray(getattr(proto, field), dtype=numpy_dtype)
    return _reshaped(flat, shape, numpy_dtype.type(0))


def _checked_shape(proto: Any, name: str) -> tuple[int, ...]:
    if proto.tensor_shape.unknown_rank:
        raise TensorConversionError(f"{_label(name)}a tensor must have a known rank")
    shape = tuple(int(dim.size) for dim in proto.tensor_shape.dim)
    if len(shape) > MAX_RANK:
        raise TensorConversionError(f"{_label(name)}rank {len(shape)} is over the limit of {MAX_RANK}")
    if any(size < 0 for size in shape):
        raise TensorConversionError(f"{_label(name)}shape {list(shape)} has a negative dimension")
    if math.prod(max(size, 1) for size in shape) > MAX_NOMINAL_ELEMENTS:
        raise TensorConversionError(f"{_label(name)}shape {list(shape)} is too large: its dimensions multiply "
                                    f"to more than {MAX_NOMINAL_ELEMENTS} (zero-sized ones counted as 1)")
    return shape


def _check_value_count(given: int, count: int, shape: tuple[int, ...], dtype: DataType, name: str) -> None:
    """As many values as elements, or one / none standing for all of them (TensorFlow's short forms)."""
    if given == count or given <= 1:
        return
    raise TensorConversionError(f"{_label(name)}{dtype_name(dtype)} tensor of shape {list(shape)} ({count} "
                                f"elements) holds {given} values")


def _reshaped(flat: np.ndarray, shape: tuple[int, ...], zero: object) -> np.ndarray:
    count = math.prod(shape)
    if flat.size == count:
        return flat.reshape(shape)
    fill = flat[0] if flat.size else zero
    filled = np.empty(shape, dtype=flat.dtype)
    filled.fill(fill)
    return filled


def _label(name: str) -> str:
    return f"input '{name}': " if name else ""


def _numeric_dtype(dtype: DataType, name: str = "") -> np.dtype:
    if dtype not in _NUMERIC:
        raise TensorConversionError(f"{_label(name)}unsupported tensor dtype {dtype_name(dtype)}")
    return _NUMERIC[dtype][0]


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
