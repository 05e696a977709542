"""The server's parts in process: flags, configs and version policies, the JSON codec, the batch scheduler."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from pathlib import Path

import grpc
import numpy as np
import pytest
from server_test_models import Affine, save_module
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from recsys_common.layout import version_directories
from serving import json_codec
from serving._protos.tensorflow_serving.config import batching_parameters_pb2
from serving.batching import BatchingOptions, BatchScheduler
from serving.errors import ServingError, http_status
from serving.model_config import ConfigError, ModelSettings, read_model_config_file
from serving.server import ModelServer, parse_options


@pytest.mark.parametrize(("code", "status"), [
    (grpc.StatusCode.INVALID_ARGUMENT, 400), (grpc.StatusCode.FAILED_PRECONDITION, 400),
    (grpc.StatusCode.NOT_FOUND, 404), (grpc.StatusCode.UNAVAILABLE, 503), (grpc.StatusCode.UNIMPLEMENTED, 501),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, 429), (grpc.StatusCode.DEADLINE_EXCEEDED, 504),
    (grpc.StatusCode.INTERNAL, 500),
])
def test_tf_serving_http_mapping(code: grpc.StatusCode, status: int) -> None:
    assert http_status(code) == status


def test_flags_parse_like_tensorflow_model_server() -> None:
    options = parse_options(["--port=9000", "--rest_api_port", "9001", "--model_name=m", "--model_base_path=/x",
                             "--enable_batching", "--enable_model_warmup=false", "--file_system_poll_wait_seconds=0.5"])
    assert (options.port, options.rest_api_port, options.model_name, options.model_base_path) == (9000, 9001, "m", "/x")
    assert options.enable_batching is True and options.enable_model_warmup is False
    assert options.file_system_poll_wait_seconds == 0.5 and options.host == "localhost"


@pytest.mark.parametrize(("policy", "on_disk", "wanted"), [
    (ModelSettings("m", Path("/m")), [1, 5, 3], {5}),
    (ModelSettings("m", Path("/m"), num_versions=2), [1, 5, 3], {3, 5}),
    (ModelSettings("m", Path("/m"), policy="all"), [1, 5, 3], {1, 3, 5}),
    (ModelSettings("m", Path("/m"), policy="specific", specific_versions=frozenset({1, 4})), [1, 5, 3], {1}),
    (ModelSettings("m", Path("/m")), [], set()),
])
def test_version_policies(policy: ModelSettings, on_disk: list[int], wanted: set[int]) -> None:
    assert policy.wanted_versions(on_disk) == wanted


def test_only_numeric_directories_are_versions(tmp_path: Path) -> None:
    for name in ("1", "20", ".tmp-3-ab12", "latest", "007"):
        (tmp_path / name).mkdir()
    (tmp_path / "4").write_text("a file, not a version")
    assert sorted(version_directories(tmp_path)) == [1, 7, 20]


def test_model_config_file(tmp_path: Path) -> None:
    config = tmp_path / "models.config"
    config.write_text('model_config_list { config { name: "a" base_path: "/models/a" model_platform: "tensorflow" '
                      'model_version_policy { latest { num_versions: 2 } } '
                      'version_labels { key: "stable" value: 3 } } }')
    (model,) = read_model_config_file(config)
    assert (model.name, model.base_path, model.policy, model.num_versions) == ("a", Path("/models/a"), "latest", 2)
    assert model.label_version("stable") == 3 and model.label_version("canary") is None


@pytest.mark.parametrize(("text", "message"), [
    ("model_config_list { config { name: 'a' } }", "has no base_path"),
    ("model_config_list { config { name: 'a' base_path: '/a' } config { name: 'a' base_path: '/b' } }", "repeated: a"),
    ("model_config_list { config { name: 'a' base_path: '/a' model_platform: 'onnx' } }", "'onnx' is not supported"),
    ("model_config_list { nonsense: 1 }", "Invalid model config file"),
])
def test_bad_model_config_files_are_named(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "models.config"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        read_model_config_file(config)


@pytest.mark.parametrize(("argv", "message"), [
    (["--model_base_path="], "--model_base_path is required"),
    (["--model_config_file=/nonexistent/models.config"], "Cannot read the model config file"),
    (["--model_base_path=/x", "--enable_batching", "--batching_parameters_file=/nonexistent"],
     "Cannot read the batching parameters file"),
])
def test_bad_server_settings_fail_before_serving(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ModelServer(parse_options(argv))


@pytest.mark.parametrize(("flags", "threads", "warned"), [
    (["--tensorflow_intra_op_parallelism=2", "--tensorflow_inter_op_parallelism=-1"], (2, -1), False),
    (["--tensorflow_inter_op_parallelism=-1"], (0, 0), True),
    ([], (0, 0), False),
])
def test_thread_flags_become_the_session_config_tf_serving_builds(
        flags: list[str], threads: tuple[int, int], warned: bool, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = ModelServer(parse_options([f"--model_base_path={tmp_path}", *flags]))
    config = server.session_config
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == threads
    assert ("--tensorflow_inter_op_parallelism=-1 is ignored" in caplog.text) == warned


def _infos(**dtypes: int) -> Mapping[str, meta_graph_pb2.TensorInfo]:
    return {name: meta_graph_pb2.TensorInfo(dtype=dtype) for name, dtype in dtypes.items()}


def test_json_rows_and_columns_decode_to_the_same_tensors() -> None:
    infos = _infos(ids=types_pb2.DT_STRING, counts=types_pb2.DT_INT64, w=types_pb2.DT_FLOAT)
    rows = {"instances": [{"ids": "a", "counts": [1, 2], "w": 0.5}, {"ids": {"b64": "Yg=="}, "counts": [3, 4], "w": 2}]}
    columns = {"inputs": {"ids": ["a", "b"], "counts": [[1, 2], [3, 4]], "w": [0.5, 2.0]}}
    from_rows, row_format = json_codec.parse_predict(rows, infos)
    from_columns, column_format = json_codec.parse_predict(columns, infos)
    assert (row_format, column_format) == (json_codec.RequestFormat.ROW, json_codec.RequestFormat.COLUMNAR)
    for tensors in (from_rows, from_columns):
        assert tensors["ids"].tolist() == [b"a", b"b"]
        assert tensors["counts"].dtype == np.int64 and tensors["counts"].tolist() == [[1, 2], [3, 4]]
        assert tensors["w"].dtype == np.float32 and tensors["w"].tolist() == [0.5, 2.0]


@pytest.mark.parametrize(("value", "dtype", "message"), [
    (2**24, types_pb2.DT_FLOAT, "without loss of precision"),
    (1.5, types_pb2.DT_INT64, "is not of expected type: int64"),
    (True, types_pb2.DT_FLOAT, "Type: True is not of expected type: float"),
    (2**31, types_pb2.DT_INT32, "is not of expected type: int32"),
    ([[1], 2], types_pb2.DT_INT64, "found at incorrect level"),
])
def test_json_values_are_checked_against_the_signature_dtype(value: object, dtype: int, message: str) -> None:
    with pytest.raises(ServingError, match=message):
        json_codec.tensor_from_json(value, dtype)


def test_json_response_formats() -> None:
    outputs = {"scores": np.array([[0.5, 0.25]], np.float32), "item_ids": np.array([[b"a", b"b"]], dtype=object)}
    assert json_codec.predict_response(outputs, json_codec.RequestFormat.ROW) == {
        "predictions": [{"item_ids": ["a", "b"], "scores": [0.5, 0.25]}]}
    assert json_codec.predict_response(outputs, json_codec.RequestFormat.COLUMNAR) == {
        "outputs": {"item_ids": [["a", "b"]], "scores": [[0.5, 0.25]]}}
    assert json_codec.dumps({"x": [float("nan"), float("-inf")]}) == b'{"x": [NaN, -Infinity]}'


def test_batching_parameters_round_trip_and_unset_fields_take_tf_servings_defaults() -> None:
    options = BatchingOptions(max_batch_size=16, batch_timeout_micros=250, max_enqueued_batches=3, num_batch_threads=2,
                              allowed_batch_sizes=(4, 16), pad_variable_length_inputs=True)
    assert BatchingOptions.from_proto(options.to_proto(batching_parameters_pb2.BatchingParameters())) == options
    only_size = batching_parameters_pb2.BatchingParameters()
    only_size.max_batch_size.value = 7
    assert BatchingOptions.from_proto(only_size) == BatchingOptions(max_batch_size=7)
    too_many_sizes = BatchingOptions(max_batch_size=16, allowed_batch_sizes=(4, 32)).to_proto(
        batching_parameters_pb2.BatchingParameters())
    with pytest.raises(ValueError, match=r"allowed_batch_sizes .* got \[4, 32\]"):
        BatchingOptions.from_proto(too_many_sizes)


def _double(inputs: Mapping[str, np.ndarray], time_left: float | None) -> dict[str, np.ndarray]:
    return {"y": inputs["x"] * 2, "rows_in_run": np.full(len(inputs["x"]), len(inputs["x"]))}


def test_batch_scheduler_pads_to_allowed_sizes_and_splits() -> None:
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=8, batch_timeout_micros=100_000, num_batch_threads=1,
                                               allowed_batch_sizes=(4, 8)))
    results: dict[int, dict[str, np.ndarray]] = {}
    barrier = threading.Barrier(3)

    def call(i: int) -> None:
        barrier.wait()
        results[i] = scheduler.run("model", {"x": np.array([i, i], np.float32)}, _double)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler.stop()
    assert sorted(results) == [0, 1, 2]
    for i, outputs in results.items():
        np.testing.assert_array_equal(outputs["y"], [2 * i, 2 * i])
    assert {int(r["rows_in_run"][0]) for r in results.values()} == {8}  # 6 rows padded up to the allowed 8


def test_batch_scheduler_keeps_incompatible_shapes_apart_and_rejects_oversized() -> None:
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=1000, num_batch_threads=2))
    wide = scheduler.run("m", {"x": np.ones((2, 3), np.float32)}, _double)
    narrow = scheduler.run("m", {"x": np.ones((1, 2), np.float32)}, _double)
    assert wide["y"].shape == (2, 3) and narrow["y"].shape == (1, 2)
    with pytest.raises(ServingError, match="Task size 5 is larger than maximum input batch size 4"):
        scheduler.run("m", {"x": np.ones(5, np.float32)}, _double)
    with pytest.raises(ServingError, match="must have equal 0th-dimension size"):
        scheduler.run("m", {"x": np.ones(2, np.float32), "z": np.ones(3, np.float32)}, _double)
    scheduler.stop()


def test_batch_scheduler_pads_variable_length_inputs_with_each_requests_first_element() -> None:
    scheduler = BatchScheduler(BatchingOptions(max_batch_size=4, batch_timeout_micros=200_000, num_batch_threads=1,
                                               pad_variable_length_inputs=True))
    histories = {0: np.array([[b"", b"a"]], dtype=object), 1: np.array([[b"", b"b", b"c"]], dtype=object)}
    results: dict[int, dict[str, np.ndarray]] = {}
    barrier = threading.Barrier(2)

    def echo(inputs: Mapping[str, np.ndarray], time_left: float | None) -> dict[str, np.ndarray]:
        return {"history": inputs["history"], "rows_in_run": np.full(len(inputs["history"]), len(inputs["history"]))}

    def call(i: int) -> None:
        barrier.wait()
        results[i] = scheduler.run("m", {"history": histories[i]}, echo)

    threads = [threading.Thread(target=call, args=(i,)) for i in histories]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    scheduler.stop()
    assert results[0]["history"].tolist() == [[b"", b"a", b""]]  # padded with its own first element
    assert results[1]["history"].tolist() == [[b"", b"b", b"c"]]
    assert results[0]["rows_in_run"].tolist() == results[1]["rows_in_run"].tolist() == [2]  # one shared run


def test_a_port_in_use_is_an_error_not_a_silent_partial_bind(tmp_path: Path) -> None:
    save_module(Affine(1.0), tmp_path / "affine" / "1")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        options = parse_options([f"--port={taken.getsockname()[1]}", f"--model_base_path={tmp_path / 'affine'}",
                                 "--file_system_poll_wait_seconds=0"])
        server = ModelServer(options)
        with pytest.raises(RuntimeError, match="Cannot bind the gRPC server to 127.0.0.1"):
            server.start()
    with pytest.raises(ServingError, match="Latest"):  # and start() cleaned up: the model was unloaded
        server.manager.resolve_version("default")
