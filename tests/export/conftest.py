"""TensorFlow's environment (legacy Keras, quiet logs) is set before any test here imports TensorFlow."""

import trainer  # noqa: F401
