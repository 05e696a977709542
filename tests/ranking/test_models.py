"""The ranking models on one interface, pretraining, and bad model names or configs."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from recsys_common import contract
from trainer.config import ConfigError, RankingConfig, load_config
from trainer.ranking.models import ItemPop, MatrixFactorization, NeuMF, build_model
from trainer.ranking.pretrain import load_pretrained

CONFIG = RankingConfig(embedding_dim=4, mlp_layers=[8, 6, 4], feature_embedding_dim=3, num_quantiles=5)


def tensors(request):
    return {name: tf.constant(value) for name, value in request.items()}


@pytest.mark.parametrize("name", ["itempop", "mf", "gmf", "mlp", "neumf", "neumf_pretrained", "full"])
def test_every_model_scores_known_and_unknown_users_and_candidates(name, hand_space, hand_request):
    model = build_model(name, hand_space, CONFIG)
    logits = model(tensors(hand_request)).numpy()
    assert logits.shape == (2, 4) and np.isfinite(logits).all()
    same = model.logits({key: tf.constant(value) for key, value in hand_request.items()}).numpy()
    np.testing.assert_allclose(same, logits, rtol=1e-6)


def test_unknown_ids_carry_no_embedding(hand_space, hand_request):
    model = MatrixFactorization(hand_space, embedding_dim=4)
    model.create_weights()
    model.global_bias.assign(0.7)
    for layer in (model.user_factors, model.item_factors, model.user_bias, model.item_bias):
        layer.embedding.embeddings.assign(tf.random.normal(layer.embedding.embeddings.shape))
    logits = model(tensors(hand_request)).numpy()
    # the unknown user with the unknown candidate "new-item" keeps only the global bias
    assert logits[1, 0] == pytest.approx(0.7)
    assert abs(logits[0, 0] - 0.7) > 1e-3


def test_itempop_scores_log_training_counts(hand_space, hand_request):
    model = ItemPop(hand_space)
    candidates = np.array([["a", "b", "c"], ["a", "c", "b"], ["a", "b", "c"]], dtype=object)
    labels = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]])
    model.fit_statistics({contract.CANDIDATE_IDS: candidates}, labels)  # positives: a twice, b once
    logits = model(tensors(hand_request)).numpy()
    np.testing.assert_allclose(logits[0], [np.log(3), 0.0, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(logits[1], [0.0, np.log(2), np.log(3), 0.0], rtol=1e-6)


def randomise(model) -> None:
    model.create_weights()
    for variable in model.trainable_variables:
        variable.assign(tf.random.normal(variable.shape, seed=1))


@pytest.mark.parametrize("alpha", [0.5, 0.2])
def test_pretraining_loads_the_gmf_and_mlp_weights(alpha, hand_space, hand_request):
    gmf, mlp, neumf = (build_model(name, hand_space, CONFIG) for name in ("gmf", "mlp", "neumf_pretrained"))
    for model in (gmf, mlp, neumf):
        randomise(model)
    load_pretrained(neumf, gmf, mlp, alpha)
    for source, target in ((gmf.gmf, neumf.gmf), (mlp.mlp, neumf.mlp)):
        for expected, actual in zip(source.get_weights(), target.get_weights(), strict=True):
            np.testing.assert_array_equal(actual, expected)
    gmf_kernel, gmf_bias = gmf.output_layer.get_weights()
    mlp_kernel, mlp_bias = mlp.output_layer.get_weights()
    kernel, bias = neumf.output_layer.get_weights()
    np.testing.assert_allclose(kernel, np.concatenate([alpha * gmf_kernel, (1 - alpha) * mlp_kernel]), rtol=1e-6)
    np.testing.assert_allclose(bias, alpha * gmf_bias + (1 - alpha) * mlp_bias, rtol=1e-6)
    # the output layer is linear, so the pretrained NeuMF predicts the alpha-mix of the two logits
    request = tensors(hand_request)
    mixed = alpha * gmf(request).numpy() + (1 - alpha) * mlp(request).numpy()
    np.testing.assert_allclose(neumf(request).numpy(), mixed, rtol=1e-5, atol=1e-5)


def test_pretraining_rejects_mismatched_models(hand_space):
    gmf, mlp, neumf = (build_model(name, hand_space, CONFIG) for name in ("gmf", "mlp", "neumf"))
    with pytest.raises(ValueError, match="GMF-only and an MLP-only"):
        load_pretrained(neumf, mlp, gmf, 0.5)
    with pytest.raises(ValueError, match="alpha must be in"):
        load_pretrained(neumf, gmf, mlp, 1.5)
    wide_gmf = NeuMF(hand_space, gmf_dim=7, mlp_layers=None)
    with pytest.raises(ValueError, match="pretrained GMF weights"):
        load_pretrained(neumf, wide_gmf, mlp, 0.5)


def test_unknown_model_names_are_errors(hand_space):
    with pytest.raises(ValueError, match="unknown ranking model 'deepfm'"):
        build_model("deepfm", hand_space, CONFIG)
    with pytest.raises(ConfigError, match="ranking.compare: unknown model 'deepfm'"):
        load_config(None, {"ranking.compare": ["mf", "deepfm"]})
    with pytest.raises(ConfigError, match="ranking.model: unknown model 'wide'"):
        load_config(None, {"ranking.model": "wide"})


@pytest.mark.parametrize(("key", "value", "message"), [
    ("ranking.l2_regularization", -0.1, "l2_regularization"),
    ("ranking.num_quantiles", 0, "num_quantiles: must be > 0"),
    ("ranking.eval_ks", [], "eval_ks"),
    ("ranking.pretrained_optimizer", "lbfgs", "pretrained_optimizer"),
])
def test_bad_ranking_config_values_name_the_key(key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, {key: value})
