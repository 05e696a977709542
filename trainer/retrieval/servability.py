"""Can stock TF Serving load an export? Checks the ops of a SavedModel against TensorFlow's own ops.

Stock TF Serving links TensorFlow's op library and nothing else. `tf.raw_ops` lists exactly
the ops TensorFlow itself defines (it is generated when TensorFlow is built, so ops that a
process loads later from a custom library, such as ScaNN's `Scann>...`, never appear in it).
An op of the graph (its nodes and every function of its library) that is not there needs a
custom build: allowed only in the namespaces the caller names (`Scann` for `retrieval`).
The reference is this process's TensorFlow version: TF Serving must be at least as new.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

NAMESPACE_SEPARATOR = ">"


class ServabilityError(RuntimeError):
    """An export that stock TF Serving (plus the allowed custom op namespaces) cannot load."""


def graph_ops(export_dir: pathlib.Path) -> set[str]:
    """Every op type in the SavedModel's MetaGraphs, functions included."""
    path = pathlib.Path(export_dir) / "saved_model.pb"
    if not path.is_file():
        raise ServabilityError(f"{path} does not exist: {export_dir} is not a SavedModel")
    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString(path.read_bytes())
    ops: set[str] = set()
    for meta_graph in saved_model.meta_graphs:
        ops.update(node.op for node in meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    return ops


def is_stock_op(op: str) -> bool:
    """True for an op that TensorFlow itself defines."""
    return NAMESPACE_SEPARATOR not in op and hasattr(tf.raw_ops, op)


def custom_ops(export_dir: pathlib.Path) -> set[str]:
    """The ops of the export that stock TensorFlow does not define."""
    return {op for op in graph_ops(export_dir) if not is_stock_op(op)}


def check_servable(export_dir: pathlib.Path, allowed_namespaces: Iterable[str] = ()) -> set[str]:
    """Raises unless every op is stock or in an allowed namespace; returns the custom ops used.

    Args:
        export_dir: a SavedModel version folder.
        allowed_namespaces: custom op namespaces the target server has, e.g. ("Scann",).

    Raises:
        ServabilityError: naming the ops that the target server would not find.
    """
    allowed = set(allowed_namespaces)
    used = custom_ops(export_dir)
    missing = sorted(op for op in used if op.split(NAMESPACE_SEPARATOR, 1)[0] not in allowed
                     or NAMESPACE_SEPARATOR not in op)
    if missing:
        where = f"stock TensorFlow plus namespaces {sorted(allowed)}" if allowed else "stock TensorFlow"
        raise ServabilityError(f"{export_dir} uses ops outside {where}: {missing}")
    return used
