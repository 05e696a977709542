"""Tiny SavedModels for the server tests (no trainer needed) and the paths of TF Serving's test models."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recsys_common import tf_env  # noqa: F401  (before TensorFlow loads)

# isort: split
import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import (
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from recsys_common import contract

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TESTDATA = PROJECT_ROOT.parent / "shared" / "data" / "tf_serving_testdata"
HALF_PLUS_TWO = TESTDATA / "saved_model_half_plus_two_cpu"
HALF_PLUS_TWO_TF2 = TESTDATA / "saved_model_half_plus_two_tf2_cpu"
HALF_PLUS_TWO_METADATA = TESTDATA / "half_plus_two_model_metadata.json"
SCANN_ITEMS = 64
SCANN_K = 5


def require_testdata() -> None:
    if not (HALF_PLUS_TWO / "00000123" / "saved_model.pb").is_file():
        pytest.skip(f"TF Serving test models not found at {TESTDATA}")


class Affine(tf.Module):
    """y = x + offset; the offset tells the versions apart."""

    def __init__(self, offset: float) -> None:
        super().__init__()
        self.offset = tf.Variable(offset, dtype=tf.float32)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"y": x + self.offset}


class Multi(tf.Module):
    """Two inputs of different dtypes and ranks: ids [B] string, counts [B, N] int64."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="ids"),
                                  tf.TensorSpec([None, None], tf.int64, name="counts")])
    def serve(self, ids: tf.Tensor, counts: tf.Tensor) -> dict[str, tf.Tensor]:
        return {"label": tf.strings.join([ids, "!"]), "total": tf.reduce_sum(counts, axis=1), "echo_bytes": ids}


class Counter(tf.Module):
    """y = 2x, and `runs`: how many times the signature has run in this session (per row)."""

    def __init__(self) -> None:
        super().__init__()
        self.runs = tf.Variable(0, dtype=tf.int64)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        runs = self.runs.assign_add(1)
        return {"y": 2.0 * x, "runs": tf.fill(tf.shape(x), runs)}


class Slow(tf.Module):
    """y = x after x[0] rounds of a while loop: a model whose run takes as long as the caller asks."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x: tf.Tensor) -> dict[str, tf.Tensor]:
        rounds = tf.cast(x[0], tf.int64)
        _, spun = tf.while_loop(lambda i, acc: i < rounds, lambda i, acc: (i + 1, tf.sin(acc) * 0.0 + acc),
                                [tf.constant(0, tf.int64), x])
        return {"y": spun}


def save_module(module: tf.Module, path: Path, namespace_whitelist: tuple[str, ...] = ()) -> Path:
    tf.saved_model.save(module, str(path), signatures={contract.SIGNATURE_NAME: module.serve},
                        options=tf.saved_model.SaveOptions(namespace_whitelist=list(namespace_whitelist)))
    return path


def publish(base: Path, version: int, write: Callable[[Path], object]) -> Path:
    """Writes a version beside the target, then renames it into place (what a polling server must see)."""
    base.mkdir(parents=True, exist_ok=True)
    temporary = base / f".tmp-{version}-{secrets.token_hex(4)}"
    write(temporary)
    target = base / str(version)
    os.rename(temporary, target)
    return target


def publish_affine(base: Path, version: int, offset: float) -> Path:
    """Publishes `Affine(offset)` as `<base>/<version>`."""
    return publish(base, version, lambda path: save_module(Affine(offset), path))


def write_broken_version(path: Path) -> None:
    path.mkdir(parents=True)
    (path / "saved_model.pb").write_bytes(b"this is not a SavedModel")


def scann_items() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    embeddings = rng.normal(size=(SCANN_ITEMS, 8)).astype(np.float32)
    ids = np.array([f"item{i}".encode() for i in range(SCANN_ITEMS)], dtype=object)
    return embeddings, ids


def build_scann_model(path: Path) -> tf.Module:
    """A real ScaNN retrieval SavedModel (query tower + tfrs ScaNN index) saved with the Scann ops whitelisted."""
    import tensorflow_recommenders as tfrs

    from trainer.retrieval.scann_index import SCANN_NAMESPACE

    embeddings, ids = scann_items()
    scann = tfrs.layers.factorized_top_k.ScaNN(k=SCANN_K, num_leaves=4, num_leaves_to_search=4,
                                              num_reordering_candidates=SCANN_ITEMS)
    scann.index(tf.constant(embeddings), tf.constant(ids))

    class Retrieval(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.projection = tf.Variable(np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32))
            self.index = scann

        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="query")])
        def serve(self, query: tf.Tensor) -> dict[str, tf.Tensor]:
            scores, item_ids = self.index(tf.matmul(query, self.projection))
            return {contract.SCORES: scores, contract.ITEM_IDS: item_ids}

    module = Retrieval()
    save_module(module, path, namespace_whitelist=(SCANN_NAMESPACE,))
    return module


def model_config_text(models: Mapping[str, Path], extra: Mapping[str, str] | None = None) -> str:
    """A text-format ModelServerConfig; `extra` adds policy/label text per model name."""
    entries = []
    for name, base in models.items():
        entries.append(f'  config {{ name: "{name}" base_path: "{base}" model_platform: "tensorflow" '
                       f'{(extra or {}).get(name, "")} }}')
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def grpc_stubs(target: str) -> tuple[grpc.Channel, Any, Any]:
    """A channel to a server and its PredictionService and ModelService stubs (the official protos)."""
    channel = grpc.insecure_channel(target)
    return (channel, prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


def predict_request(model: str, inputs: Mapping[str, Any], signature: str = "", version: int | None = None,
                    label: str = "") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=model, signature_name=signature))
    if version is not None:
        request.model_spec.version.value = version
    elif label:
        request.model_spec.version_label = label
    for name, value in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
    return request
