"""SessionModel: a SavedModel run in a TF1 session by SignatureDef tensor names, as TF Serving runs it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from server_test_models import (
    HALF_PLUS_TWO,
    SCANN_K,
    Affine,
    Multi,
    build_scann_model,
    require_testdata,
    save_module,
    scann_items,
    write_broken_version,
)

from recsys_common import contract
from serving.errors import ServingError
from serving.session_model import SessionModel, serving_session_config


@pytest.fixture(scope="module")
def multi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionModel]:
    path = save_module(Multi(), tmp_path_factory.mktemp("multi") / "1")
    with SessionModel.load(path) as model:
        yield model


def test_half_plus_two_accepts_what_tf_serving_accepts() -> None:
    require_testdata()
    with SessionModel.load(HALF_PLUS_TWO / "00000123") as model:
        # x is declared [-1, 1]; TF Serving (Session::Run) still takes [3], and so do we.
        flat = model.run("", {"x": np.array([2.0, 3.0, 4.0], np.float32)})
        column = model.run(contract.SIGNATURE_NAME, {"x": [[2.0], [3.0]]})
    np.testing.assert_array_equal(flat["y"], [3.0, 3.5, 4.0])
    np.testing.assert_array_equal(column["y"], [[3.0], [3.5]])


def test_scann_savedmodel_loads_with_the_scann_ops_and_answers_exact_top_k(tmp_path: Path) -> None:
    module = build_scann_model(tmp_path / "scann" / "1")
    query = np.random.default_rng(3).normal(size=(3, 4)).astype(np.float32)
    eager = module.serve(query)
    with SessionModel.load(tmp_path / "scann" / "1") as model:
        served = model.run(contract.SIGNATURE_NAME, {"query": query})
    # Brute force in NumPy: every leaf is searched and every candidate re-scored, so ScaNN is exact here.
    embeddings, ids = scann_items()
    projection = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    scores = (query @ projection) @ embeddings.T
    expected = np.argsort(-scores, axis=1)[:, :SCANN_K]
    np.testing.assert_array_equal(served[contract.ITEM_IDS], ids[expected])
    np.testing.assert_allclose(served[contract.SCORES], np.take_along_axis(scores, expected, 1), rtol=1e-4)
    np.testing.assert_array_equal(served[contract.ITEM_IDS], eager[contract.ITEM_IDS].numpy())


def test_reloaded_model_answers_like_the_saved_module(tmp_path: Path) -> None:
    path = save_module(Affine(2.5), tmp_path / "1")
    with SessionModel.load(path) as model:
        outputs = model.run("", {"x": np.array([0.0, -1.0, 4.0], np.float32)})
    np.testing.assert_allclose(outputs["y"], [2.5, 1.5, 6.5])


@pytest.mark.parametrize(("intra", "inter", "threads"), [
    (0, 0, (0, 0)),
    (4, -1, (4, -1)),    # ops in the caller's thread, beside a sized intra-op pool
    (0, -1, (0, 0)),     # TF Serving ignores inter-op unless one of the two is positive
    (0, 3, (0, 3)),
    (2, 0, (2, 0)),
])
def test_session_config_follows_tf_serving(intra: int, inter: int, threads: tuple[int, int]) -> None:
    config = serving_session_config(intra, inter)
    assert (config.intra_op_parallelism_threads, config.inter_op_parallelism_threads) == threads


def test_ops_in_the_callers_thread_give_the_same_answers(tmp_path: Path) -> None:
    build_scann_model(tmp_path / "scann" / "1")
    query = np.random.default_rng(5).normal(size=(4, 4)).astype(np.float32)
    answers = []
    for config in (None, serving_session_config(2, -1)):
        with SessionModel.load(tmp_path / "scann" / "1", session_config=config) as model:
            answers.append([model.run("", {"query": query[i:i + 1]}) for i in range(len(query))])
    for default, in_caller in zip(*answers):
        np.testing.assert_array_equal(in_caller[contract.ITEM_IDS], default[contract.ITEM_IDS])
        np.testing.assert_array_equal(in_caller[contract.SCORES], default[contract.SCORES])


def test_strings_lists_and_output_filter(multi: SessionModel) -> None:
    outputs = multi.run("", {"ids": ["a", b"b"], "counts": np.array([[1, 2], [3, 4]], np.int64)},
                        output_filter=("total", "label"))
    assert list(outputs) == ["total", "label"]
    np.testing.assert_array_equal(outputs["total"], [3, 7])
    assert outputs["label"].tolist() == [b"a!", b"b!"]


@pytest.mark.parametrize(("signature", "inputs", "code", "message"), [
    ("nope", {}, grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.'),
    ("", {"ids": ["a"]}, grpc.StatusCode.INVALID_ARGUMENT,
     ("input size does not match signature: 1!=2 len({ids}) != len({counts,ids}). Sent extra: {}. "
     "Missing but required: {counts}.")),
    ("", {"ids": ["a"], "counts": [[1]], "z": [1]}, grpc.StatusCode.INVALID_ARGUMENT, "Sent extra: {z}"),
    ("", {"ids": ["a"], "nope": [[1]]}, grpc.StatusCode.INVALID_ARGUMENT,
     "input tensor alias not found in signature: nope. Inputs expected to be in the set {counts,ids}."),
    ("", {"ids": ["a"], "counts": np.array([[1.5]])}, grpc.StatusCode.INVALID_ARGUMENT,
     "Type mismatch for input 'counts': actual double vs. expect int64"),
    ("", {"ids": np.array([1, 2]), "counts": [[1], [2]]}, grpc.StatusCode.INVALID_ARGUMENT,
     "Type mismatch for input 'ids': actual int64 vs. expect string"),
    ("", {"ids": ["a"], "counts": [["x"]]}, grpc.StatusCode.INVALID_ARGUMENT, "input 'counts' cannot be converted"),
    ("", {"ids": ["a", "b"], "counts": np.array([1, 2], np.int64)}, grpc.StatusCode.INVALID_ARGUMENT,
     "input 'counts' has shape [2] but the signature declares [-1, -1]"),
])
def test_bad_inputs_are_named(multi: SessionModel, signature: str, inputs: dict, code: grpc.StatusCode,
                              message: str) -> None:
    with pytest.raises(ServingError) as caught:
        multi.run(signature, inputs)
    assert caught.value.code == code
    assert message in caught.value.message


def test_unknown_output_alias(multi: SessionModel) -> None:
    with pytest.raises(ServingError, match="output tensor alias not found in signature: nope"):
        multi.run("", {"ids": ["a"], "counts": [[1]]}, output_filter=("nope",))


def test_load_errors_name_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ServingError) as missing:
        SessionModel.load(tmp_path / "absent")
    assert missing.value.code == grpc.StatusCode.NOT_FOUND and "absent" in missing.value.message
    write_broken_version(tmp_path / "broken")
    with pytest.raises(ServingError) as broken:
        SessionModel.load(tmp_path / "broken")
    assert "broken" in broken.value.message


def test_closed_model_is_unavailable(tmp_path: Path) -> None:
    model = SessionModel.load(save_module(Affine(1.0), tmp_path / "1"))
    model.close()
    with pytest.raises(ServingError) as caught:
        model.run("", {"x": [1.0]})
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
