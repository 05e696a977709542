"""Classify and Regress: tf.Examples in, a serialized-Example signature run, results out (TF Serving's rules).

A classification signature has one string input (the serialized tf.Examples, [B]) and the
outputs "classes" [B, C] string and/or "scores" [B, C] float; a regression signature has one
string input and the output "outputs" [B] or [B, 1] float.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.errors import invalid_argument

CLASSES = "classes"
SCORES = "scores"
REGRESSION_OUTPUTS = "outputs"

RunSignature = Callable[[str, Mapping[str, np.ndarray], tuple[str, ...]], dict[str, np.ndarray]]


def serialized_examples(request_input: input_pb2.Input) -> np.ndarray:
    """The examples of an Input as a [B] object array of serialized tf.Examples.

    With a context, each example is the context merged with the example (the example wins),
    which is what concatenating their wire encodings means, as TF Serving does it.
    """
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        records = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context.SerializeToString()
        records = [context + example.SerializeToString()
                   for example in request_input.example_list_with_context.examples]
    else:
        records = []
    if not records:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(records), dtype=object)
    array[:] = records
    return array


def _single_input(signature: meta_graph_pb2.SignatureDef) -> str:
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    return next(iter(signature.inputs))


def classify(signature_name: str, signature: meta_graph_pb2.SignatureDef, request_input: input_pb2.Input,
             run: RunSignature) -> classification_pb2.ClassificationResult:
    """Runs a classification signature on the request's examples.

    Args:
        signature_name: the resolved signature key.
        signature: its SignatureDef.
        request_input: the tf.Examples.
        run: runs a signature: (name, inputs, output_filter) -> outputs.
    """
    input_alias = _single_input(signature)
    wanted = tuple(alias for alias in (CLASSES, SCORES) if alias in signature.outputs)
    if not wanted:
        raise invalid_argument(f"Expected classification signature outputs to contain at least one of "
                               f"{{{CLASSES}, {SCORES}}}, found {{{','.join(sorted(signature.outputs))}}}")
    examples = serialized_examples(request_input)
    outputs = run(signature_name, {input_alias: examples}, wanted)
    return classification_result(outputs.get(CLASSES), outputs.get(SCORES), len(examples))


def classification_result(classes: np.ndarray | None, scores: np.ndarray | None,
                          batch_size: int) -> classification_pb2.ClassificationResult:
    """Builds the result from classes [B, C] (bytes) and/or scores [B, C] (float)."""
    for name, tensor in ((CLASSES, classes), (SCORES, scores)):
        if tensor is not None and (tensor.ndim != 2 or tensor.shape[0] != batch_size):
            raise invalid_argument(f"Expected {name} Tensor shape: [batch_size num_classes] with batch_size "
                                   f"{batch_size} but got {list(tensor.shape)}")
    if classes is not None and scores is not None and classes.shape != scores.shape:
        raise invalid_argument(f"Tensors class and score should match in shape, but had {list(classes.shape)} "
                               f"and {list(scores.shape)}")
    num_classes = (classes if classes is not None else scores).shape[1]  # type: ignore[union-attr]
    result = classification_pb2.ClassificationResult()
    for row in range(batch_size):
        classifications = result.classifications.add()
        for column in range(num_classes):
            item = classifications.classes.add()
            if classes is not None:
                label = classes[row, column]
                item.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                item.score = float(scores[row, column])
    return result


def regress(signature_name: str, signature: meta_graph_pb2.SignatureDef, request_input: input_pb2.Input,
            run: RunSignature) -> regression_pb2.RegressionResult:
    """Runs a regression signature on the request's examples (see `classify` for the arguments)."""
    input_alias = _single_input(signature)
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESSION_OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No output Tensor found with key {REGRESSION_OUTPUTS}")
    examples = serialized_examples(request_input)
    outputs = run(signature_name, {input_alias: examples}, (REGRESSION_OUTPUTS,))
    return regression_result(outputs[REGRESSION_OUTPUTS], len(examples))


def regression_result(values: np.ndarray, batch_size: int) -> regression_pb2.RegressionResult:
    """Builds the result from outputs [B] or [B, 1] (float)."""
    if not (values.shape == (batch_size,) or values.shape == (batch_size, 1)):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
                               f"with batch_size {batch_size} but got {list(values.shape)}")
    result = regression_pb2.RegressionResult()
    for value in values.reshape(-1):
        result.regressions.add().value = float(value)
    return result
