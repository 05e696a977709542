"""The one TensorProto codec (serving.tensor_proto) against TensorFlow's own encoder and decoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from serving.tensor_proto import (
    TensorConversionError,
    TensorTooLargeError,
    decoded_size,
    from_tensor_proto,
    to_tensor_proto,
)

ARRAYS = [
    np.array([[1.5, -2.25], [0.0, 3.0]], np.float32),
    np.array([1e300, -1.0], np.float64),
    np.array([[0.5, -1.0, 65504.0]], np.float16),
    np.array([1, -2, 2**40], np.int64),
    np.array([[1, -2, 2**30]], np.int32),
    np.array([-3, 100], np.int8),
    np.array([0, 255], np.uint8),
    np.array([0, 65535], np.uint16),
    np.array([0, 2**32 - 1], np.uint32),
    np.array([0, 2**64 - 1], np.uint64),
    np.array([[True, False]]),
    np.array([[b"a", b"\xff\x00"], [b"", b"xyz"]], dtype=object),
]


@pytest.mark.parametrize("array", ARRAYS, ids=lambda a: str(a.dtype) if a.dtype != object else "bytes")
@pytest.mark.parametrize("typed", [False, True], ids=["tensor_content", "typed_fields"])
def test_encoding_matches_tensorflow_both_ways(array: np.ndarray, typed: bool) -> None:
    mine = to_tensor_proto(array, out=tensor_pb2.TensorProto(), typed=typed)
    np.testing.assert_array_equal(tf.make_ndarray(mine), array)  # TensorFlow reads what we write
    if typed and array.dtype != object:
        assert not mine.tensor_content
    theirs = tf.make_tensor_proto(array)
    decoded = from_tensor_proto(theirs, text=False)  # we read what TensorFlow writes
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)


def test_short_forms_fill_the_shape_like_tensorflow() -> None:
    one = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, int64_val=[7])
    one.tensor_shape.dim.add().size = 3
    none = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
    none.tensor_shape.dim.add().size = 2
    for proto in (one, none):
        np.testing.assert_array_equal(from_tensor_proto(proto), tf.make_ndarray(proto))


def test_strings_decode_as_text_for_the_client_and_bytes_for_the_server() -> None:
    proto = to_tensor_proto(np.array(["é", "x"]), types_pb2.DT_STRING)
    assert from_tensor_proto(proto).tolist() == ["é", "x"]
    assert from_tensor_proto(proto, text=False).tolist() == ["é".encode(), b"x"]


def _declared(dtype: int, shape: list[int], **values: object) -> tensor_pb2.TensorProto:
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def test_a_huge_declared_shape_is_refused_before_allocation() -> None:
    proto = _declared(types_pb2.DT_INT64, [10**12], int64_val=[1])  # 8 TB once decoded
    assert decoded_size(proto) == 8 * 10**12
    started = time.perf_counter()
    with pytest.raises(TensorTooLargeError, match=r"input 'age'.*over the limit of 1048576"):
        from_tensor_proto(proto, "age", max_bytes=2**20)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(("proto", "message"), [
    (_declared(types_pb2.DT_FLOAT, [2, 2], float_val=[1.0, 2.0, 3.0]), r"\(4 elements\) holds 3 values"),
    (_declared(types_pb2.DT_FLOAT, [2], float_val=[1.0, 2.0, 3.0]), r"\(2 elements\) holds 3 values"),
    (_declared(types_pb2.DT_FLOAT, [3], tensor_content=b"\x00" * 8), "needs 12 bytes of tensor_content, got 8"),
    (_declared(types_pb2.DT_STRING, [1], tensor_content=b"a"), "cannot use tensor_content"),
    (_declared(types_pb2.DT_FLOAT, [2, -1]), "negative dimension"),
    (_declared(types_pb2.DT_FLOAT, [1] * 255), "rank 255 is over the limit of 254"),
    (_declared(types_pb2.DT_RESOURCE, [1]), "unsupported tensor dtype DT_RESOURCE"),
    (_declared(types_pb2.DT_INVALID, [1]), "unsupported tensor dtype DT_INVALID"),
], ids=["too few", "too many", "short content", "string content", "negative dim", "rank", "resource", "invalid"])
def test_malformed_protos_are_refused_naming_the_input(proto: tensor_pb2.TensorProto, message: str) -> None:
    with pytest.raises(TensorConversionError, match=message) as caught:
        from_tensor_proto(proto, "scores")
    assert "input 'scores'" in str(caught.value)


def test_values_that_do_not_fit_the_requested_dtype_are_refused() -> None:
    with pytest.raises(TensorConversionError, match="cannot send float64 values as DT_INT64"):
        to_tensor_proto(np.array([1.5]), types_pb2.DT_INT64)
    with pytest.raises(TensorConversionError, match="out of range for DT_INT8"):
        to_tensor_proto(np.array([300]), types_pb2.DT_INT8)
    with pytest.raises(TensorConversionError, match="unsupported tensor dtype complex128"):
        to_tensor_proto(np.array([1j]))
