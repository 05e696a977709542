"""The TensorFlow environment of the project; import this module before anything imports TensorFlow.

TensorFlow Recommenders needs the legacy Keras 2 (tf-keras), and the SavedModels are built
and served under it. Variables already set by the user win (`setdefault`).
"""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# Keep TensorFlow's start-up noise (CUDA probing, oneDNN notices) out of the user's view. Errors
# still surface as Python exceptions; set TF_CPP_MIN_LOG_LEVEL=0 to see TensorFlow's C++ log.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
