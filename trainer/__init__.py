"""Training, evaluation and export of the two-stage recommender.

TensorFlow Recommenders needs the legacy Keras 2 (tf-keras): the environment
(recsys_common.tf_env) is set here, before anything in the package imports TensorFlow,
so no user has to.
"""

from recsys_common import tf_env  # noqa: F401
