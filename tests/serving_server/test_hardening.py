"""Requests that must not take the server down: oversized or inconsistent tensors are refused before any
allocation, request caps, deadlines that reach the session run, and the reload door closed by default."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import pytest
import tensorflow as tf
from server_test_models import Affine, Slow, grpc_stubs, model_config_text, predict_request, save_module
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.config import model_server_config_pb2

from serving.testing import ServerProcess, running_server

MAX_BATCH = 4
MAX_BYTES = 64 * 1024
MiB = 2**20


def huge_tensor(dtype: int, shape: list[int], **values: Any) -> tensor_pb2.TensorProto:
    """A tensor that declares `shape` but carries only the given values (TensorFlow's short form)."""
    proto = tensor_pb2.TensorProto(dtype=dtype, **values)
    for size in shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def rss(server: ServerProcess) -> int:
    return int(psutil.Process(server.process.pid).memory_info().rss)


def assert_still_serving(stub: Any) -> None:
    response = stub.Predict(predict_request("affine", {"x": np.array([1.0, 2.5], np.float32)}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [2.0, 3.5])


@pytest.fixture(scope="module")
def limits_server(model_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """affine, multi and slow behind small request caps, with HandleReloadConfigRequest enabled."""
    folder = tmp_path_factory.mktemp("limits_server")
    save_module(Slow(), folder / "slow" / "1")
    models = {"affine": model_root / "affine", "multi": model_root / "multi", "slow": folder / "slow"}
    (folder / "models.config").write_text(model_config_text(models))
    with running_server(wait_for=list(models), log_dir=folder, model_config_file=folder / "models.config",
                        max_request_batch_size=MAX_BATCH, max_request_bytes=MAX_BYTES,
                        enable_model_reload=True) as server:
        yield server


@pytest.fixture(scope="module")
def limits_stubs(limits_server: ServerProcess) -> Iterator[tuple[Any, Any]]:
    channel, prediction, model_service = grpc_stubs(limits_server.grpc_target)
    with channel:
        yield prediction, model_service


HUGE_CASES = [
    # (model, the oversized input, the others): int64 [1e8] with one value is 800 MB once decoded.
    ("multi", "counts", huge_tensor(types_pb2.DT_INT64, [1, 100_000_000], int64_val=[7]),
     {"ids": np.array([b"a"])}),
    ("affine", "x", huge_tensor(types_pb2.DT_FLOAT, [1_000_000_000], float_val=[1.0]), {}),
    ("multi", "ids", huge_tensor(types_pb2.DT_STRING, [100_000_000], string_val=[b"a"]),
     {"counts": np.array([[1]])}),
]


@pytest.mark.parametrize(("model", "name", "proto", "others"), HUGE_CASES, ids=["int64 1e8", "float 1e9", "string 1e8"])
def test_a_huge_declared_shape_is_refused_at_once_with_memory_flat(
        main_server: ServerProcess, stubs: tuple[Any, Any], model: str, name: str, proto: tensor_pb2.TensorProto,
        others: dict[str, np.ndarray]) -> None:
    request = predict_request(model, others)
    request.inputs[name].CopyFrom(proto)
    assert request.ByteSize() < 300  # the 232-byte attack of the issue
    before = rss(main_server)
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    elapsed = time.perf_counter() - started
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"input '{name}'" in caught.value.details() and "--max_request_bytes" in caught.value.details()
    assert elapsed < 1.0
    assert rss(main_server) - before < 50 * MiB
    assert_still_serving(stubs[0])


MALFORMED_TENSORS = [
    ("content shorter than the shape", huge_tensor(types_pb2.DT_INT64, [1, 3], tensor_content=b"\x00" * 16),
     "needs 24 bytes of tensor_content, got 16"),
    ("content longer than the shape", huge_tensor(types_pb2.DT_INT64, [1, 1], tensor_content=b"\x00" * 16),
     "needs 8 bytes of tensor_content, got 16"),
    ("some values missing", huge_tensor(types_pb2.DT_INT64, [1, 5], int64_val=[1, 2, 3]), "holds 3 values"),
    ("negative dimension", huge_tensor(types_pb2.DT_INT64, [1, -4], int64_val=[1]), "negative dimension"),
    ("rank over 254", huge_tensor(types_pb2.DT_INT64, [1] * 300, int64_val=[1]), "rank 300"),
    ("resource dtype", huge_tensor(types_pb2.DT_RESOURCE, [1, 1]), "DT_RESOURCE"),
    ("variant dtype", huge_tensor(types_pb2.DT_VARIANT, [1, 1]), "DT_VARIANT"),
]


@pytest.mark.parametrize(("case", "proto", "message"), MALFORMED_TENSORS, ids=[c[0] for c in MALFORMED_TENSORS])
def test_a_malformed_tensor_is_invalid_argument_naming_the_input(stubs: tuple[Any, Any], case: str,
                                                                  proto: tensor_pb2.TensorProto, message: str) -> None:
    request = predict_request("multi", {"ids": np.array([b"a"])})
    request.inputs["counts"].CopyFrom(proto)
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "tensor parsing error: counts" in caught.value.details()
    assert message in caught.value.details()
    assert_still_serving(stubs[0])


def test_inputs_that_disagree_on_the_batch_size_are_refused_naming_them(stubs: tuple[Any, Any]) -> None:
    request = predict_request("multi", {"ids": np.array([b"a", b"b"]), "counts": np.array([[1], [2], [3]])})
    with pytest.raises(grpc.RpcError) as caught:
        stubs[0].Predict(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "disagree on the batch size" in caught.value.details()
    assert "'counts' has 3" in caught.value.details() and "'ids' has 2" in caught.value.details()


def test_the_batch_size_cap(limits_stubs: tuple[Any, Any]) -> None:
    at_cap = np.arange(MAX_BATCH, dtype=np.float32)
    response = limits_stubs[0].Predict(predict_request("affine", {"x": at_cap}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), at_cap + 1.0)
    with pytest.raises(grpc.RpcError) as caught:
        limits_stubs[0].Predict(predict_request("affine", {"x": np.zeros(MAX_BATCH + 1, np.float32)}), timeout=10)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"input 'x' has batch size {MAX_BATCH + 1}" in caught.value.details()
    assert "--max_request_batch_size" in caught.value.details()


def test_the_request_size_caps(limits_stubs: tuple[Any, Any]) -> None:
    # On the wire: gRPC refuses a message over --max_request_bytes before it is parsed.
    big = predict_request("affine", {"x": np.zeros(MAX_BYTES // 4, np.float32)})
    assert big.ByteSize() > MAX_BYTES
    with pytest.raises(grpc.RpcError) as wire:
        limits_stubs[0].Predict(big, timeout=10)
    assert wire.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # Decoded: one-byte varints would be 8 bytes each once decoded (2 rows, under the batch cap).
    request = predict_request("multi", {"ids": np.array([b"a", b"b"])})
    request.inputs["counts"].CopyFrom(huge_tensor(types_pb2.DT_INT64, [2, 5000], int64_val=[1] * 10_000))
    assert request.ByteSize() < MAX_BYTES < 10_000 * 8
    with pytest.raises(grpc.RpcError) as decoded:
        limits_stubs[0].Predict(request, timeout=10)
    assert decoded.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "input 'counts'" in decoded.value.details() and "--max_request_bytes" in decoded.value.details()


def test_the_deadline_cancels_the_session_run_and_the_server_keeps_serving(
        limits_server: ServerProcess, limits_stubs: tuple[Any, Any]) -> None:
    quick = limits_stubs[0].Predict(predict_request("slow", {"x": np.array([50.0], np.float32)}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(quick.outputs["y"]), [50.0])
    process = psutil.Process(limits_server.process.pid)
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as caught:  # 1e12 rounds: hours of work unless the run is cancelled
        limits_stubs[0].Predict(predict_request("slow", {"x": np.array([1e12], np.float32)}), timeout=0.3)
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.perf_counter() - started < 2.0
    time.sleep(0.5)  # the server's own timeout fires with the client's
    cpu_before = sum(process.cpu_times()[:2])
    time.sleep(1.0)
    assert sum(process.cpu_times()[:2]) - cpu_before < 0.5, "the abandoned run is still spinning"
    assert_still_serving(limits_stubs[0])


def _reload_request(models: dict[str, Path]) -> model_management_pb2.ReloadConfigRequest:
    config = model_server_config_pb2.ModelServerConfig()
    for name, base in models.items():
        config.model_config_list.config.add(name=name, base_path=str(base), model_platform="tensorflow")
    return model_management_pb2.ReloadConfigRequest(config=config)


def test_reload_is_refused_by_default(model_root: Path, stubs: tuple[Any, Any]) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stubs[1].HandleReloadConfigRequest(_reload_request({"affine": model_root / "affine"}), timeout=10)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "--enable_model_reload" in caught.value.details()
    assert_still_serving(stubs[0])  # nothing was unloaded


def test_reload_works_when_enabled(limits_server: ServerProcess, limits_stubs: tuple[Any, Any],
                                   tmp_path: Path) -> None:
    save_module(Affine(10.0), tmp_path / "affine10" / "1")
    limits_stubs[1].HandleReloadConfigRequest(_reload_request({"affine10": tmp_path / "affine10"}), timeout=60)
    response = limits_stubs[0].Predict(predict_request("affine10", {"x": np.array([1.0], np.float32)}), timeout=10)
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), [11.0])
    with pytest.raises(grpc.RpcError) as gone:  # the models of the old config are unloaded
        limits_stubs[0].Predict(predict_request("affine", {"x": np.array([1.0], np.float32)}), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND
