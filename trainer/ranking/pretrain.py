"""NeuMF initialised from a trained GMF and a trained MLP (He et al. 2017, section 3.4.1).

The GMF and MLP branches take the embeddings and hidden layers of the trained models as they
are; the output layer concatenates their output weights scaled by the trade-off alpha:
h = [alpha * h_GMF, (1 - alpha) * h_MLP], b = alpha * b_GMF + (1 - alpha) * b_MLP.
"""

from __future__ import annotations

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tf_keras as keras

from trainer.ranking.models import NeuMF


def load_pretrained(neumf: NeuMF, gmf: NeuMF, mlp: NeuMF, alpha: float) -> None:
    """Copies the weights of `gmf` and `mlp` into `neumf` (all three built over the same feature space).

    Raises:
        ValueError: alpha outside [0, 1], or models whose branches do not match.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"pretrain alpha must be in [0, 1], got {alpha}")
    if neumf.gmf is None or neumf.mlp is None or gmf.gmf is None or gmf.mlp is not None or mlp.mlp is None \
            or mlp.gmf is not None:
        raise ValueError("load_pretrained needs a NeuMF with both branches, a GMF-only and an MLP-only model")
    for model in (neumf, gmf, mlp):
        model.create_weights()
    _copy(gmf.gmf, neumf.gmf, "GMF")
    _copy(mlp.mlp, neumf.mlp, "MLP")
    gmf_kernel, gmf_bias = gmf.output_layer.get_weights()
    mlp_kernel, mlp_bias = mlp.output_layer.get_weights()
    neumf.output_layer.set_weights([
        np.concatenate([alpha * gmf_kernel, (1.0 - alpha) * mlp_kernel], axis=0),
        alpha * gmf_bias + (1.0 - alpha) * mlp_bias,
    ])


def _copy(source: keras.layers.Layer, target: keras.layers.Layer, name: str) -> None:
    source_weights = source.get_weights()
    target_shapes = [w.shape for w in target.get_weights()]
    if [w.shape for w in source_weights] != target_shapes:
        raise ValueError(f"pretrained {name} weights {[w.shape for w in source_weights]} do not fit the NeuMF "
                         f"{name} branch {target_shapes}")
    target.set_weights(source_weights)
