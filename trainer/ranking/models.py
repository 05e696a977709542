"""Ranking models on one interface: `model(inputs) -> logits [B, N]` for candidate_ids [B, N].

    ItemPop              log(1 + training count) of the candidate: the popularity baseline.
    MatrixFactorization  p_u . q_i + b_u + b_i + b (dot-product MF).
    NeuMF                He et al. 2017: a GMF branch (p_u * q_i) and an MLP branch (a tower over
                         [p_u, q_i]) with separate embeddings, concatenated before one output unit.
                         GMF and MLP are NeuMF with one branch; the full model feeds the YouTube
                         ranking features (trainer.ranking.features) into the MLP branch as well.

The logit is that of a (weighted) logistic regression: sigmoid(logit) is the watch
probability, exp(logit) the expected watch time (trainer.ranking.loss). Users and items
outside the training vocabulary get a zero embedding, so they are scored (by the biases and,
in the full model, by their content features), never an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from recsys_common import contract
from trainer.config import RANKING_MODELS, RankingConfig
from trainer.context import ModelContext
from trainer.data.vocab import NUM_RESERVED
from trainer.fitting import EXAMPLE_LOSS
from trainer.layers import IdEmbedding, string_lookup
from trainer.ranking.features import RankingFeatures
from trainer.ranking.loss import weighted_logistic_loss, weighted_logistic_task

ID_INPUTS = (contract.USER_ID, contract.CANDIDATE_IDS)
# The inputs of a model with features, but for the ranking-only ones its features may not read.
ALL_INPUTS = tuple(spec.name for spec in contract.RANKING_INPUTS if spec not in contract.RANKING_CONTEXT_INPUTS)
LABELS, WEIGHTS = "__labels", "__weights"  # the training rows' targets, next to the model inputs


class RankingModel(tfrs.models.Model):
    """Scores candidates: `call(inputs) -> logits [B, N]`; trains with the weighted logistic loss.

    A training batch holds the model inputs, LABELS [B, C] (1 for a watch, 0 for a negative) and
    WEIGHTS [B, C] (trainer.ranking.loss); `compute_loss` is tfrs.tasks.Ranking's binary cross-entropy
    on the logits with WEIGHTS as its sample_weight, averaged over the pairs (`weighted_logistic_loss`).

    Attributes:
        feature_keys: the signature inputs the model reads (training feeds only these).
        learns_by_gradient: False for models fitted by counting (ItemPop).
    """

    feature_keys: tuple[str, ...] = ID_INPUTS
    learns_by_gradient = True

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = weighted_logistic_task()
        self.example_loss = keras.metrics.Mean(name=EXAMPLE_LOSS)

    def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Args: inputs: the batch (module docstring). Returns: this replica's share of the mean weighted loss."""
        features = dict(inputs)
        labels, weights = features.pop(LABELS), features.pop(WEIGHTS)
        loss = weighted_logistic_loss(labels, self(features, training=training), weights, self.task)
        self.example_loss.update_state(loss, sample_weight=tf.size(labels))
        # The optimizer sums the replicas' gradients: each contributes its share of the global mean.
        return loss / tf.distribute.get_replica_context().num_replicas_in_sync

    @property
    def context_inputs(self) -> tuple[str, ...]:
        """The ranking-only signature inputs (contract.RANKING_CONTEXT_INPUTS) among `feature_keys`."""
        names = {spec.name for spec in contract.RANKING_CONTEXT_INPUTS}
        return tuple(key for key in self.feature_keys if key in names)

    def fit_statistics(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        """Fits what is counted rather than learnt, on training inputs (candidate_ids [R, C]) and labels [R, C]."""

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        raise NotImplementedError

    def create_weights(self) -> None:
        """Creates the weights (as the first call would) by scoring one request of unknown values."""
        if not self.built:
            self(dummy_request())

    def logits(self, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """The inference-mode logits [B, N] of the inputs in `feature_keys` (one graph, traced once)."""
        if getattr(self, "_inference", None) is None:
            specs = {spec.name: tf.TensorSpec([None] * spec.rank, tf.dtypes.as_dtype(spec.dtype), spec.name)
                     for spec in contract.RANKING_INPUTS if spec.name in self.feature_keys}
            self._inference = tf.function(lambda batch: self(batch, training=False), input_signature=[specs],
                                          autograph=False)
        return self._inference({key: inputs[key] for key in self.feature_keys})


class ItemPop(RankingModel):
    """The popularity baseline: logit = log(1 + number of training positives of the candidate)."""

    learns_by_gradient = False

    def __init__(self, space: ModelContext, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.items = string_lookup(space.vocab.item_ids)
        self.log_counts = self.add_weight(name="log_counts", shape=(len(space.vocab.item_ids) + NUM_RESERVED,),
                                          trainable=False, initializer="zeros")

    def fit_statistics(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        codes = self.items(tf.constant(inputs[contract.CANDIDATE_IDS][labels > 0])).numpy()
        counts = np.bincount(codes, minlength=self.log_counts.shape[0]).astype(np.float64)
        counts[:NUM_RESERVED] = 0.0
        self.log_counts.assign(np.log1p(counts).astype(np.float32))

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return tf.gather(self.log_counts, self.items(inputs[contract.CANDIDATE_IDS]))


def id_embedding(vocabulary_size: int, dim: int, l2: float, name: str) -> IdEmbedding:
    """NCF's id embedding (N(0, 0.01) initial values); padding and out-of-vocabulary ids embed to zeros."""
    return IdEmbedding(vocabulary_size, dim, l2, keras.initializers.RandomNormal(stddev=0.01), name=name)


class MatrixFactorization(RankingModel):
    """Dot-product MF with user, item and global biases."""

    def __init__(self, space: ModelContext, embedding_dim: int, l2: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.users, self.items = string_lookup(space.vocab.user_ids), string_lookup(space.vocab.item_ids)
        self.user_factors = id_embedding(len(space.vocab.user_ids), embedding_dim, l2, name="user_factors")
        self.item_factors = id_embedding(len(space.vocab.item_ids), embedding_dim, l2, name="item_factors")
        self.user_bias = id_embedding(len(space.vocab.user_ids), 1, l2, name="user_bias")
        self.item_bias = id_embedding(len(space.vocab.item_ids), 1, l2, name="item_bias")
        self.global_bias = self.add_weight(name="global_bias", shape=(), initializer="zeros")

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users, items = self.users(inputs[contract.USER_ID]), self.items(inputs[contract.CANDIDATE_IDS])
        dot = tf.reduce_sum(self.user_factors(users)[:, None, :] * self.item_factors(items), axis=-1)
        return dot + self.user_bias(users) + tf.squeeze(self.item_bias(items), -1) + self.global_bias


class GmfBranch(keras.layers.Layer):
    """Generalised matrix factorisation: the element-wise product p_u * q_i, [B, N, E]."""

    def __init__(self, space: ModelContext, embedding_dim: int, l2: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.user_embedding = id_embedding(len(space.vocab.user_ids), embedding_dim, l2, name="user_embedding")
        self.item_embedding = id_embedding(len(space.vocab.item_ids), embedding_dim, l2, name="item_embedding")

    def call(self, users: tf.Tensor, items: tf.Tensor) -> tf.Tensor:
        """Args: users [B], items [B, N] int64 codes. Returns: [B, N, E]."""
        return self.user_embedding(users)[:, None, :] * self.item_embedding(items)


class MlpBranch(keras.layers.Layer):
    """The MLP tower over [p_u, q_i (, ranking features)], [B, N, layers[-1]].

    As in the NCF code, `layers[0]` is the width of the concatenated embeddings (each
    layers[0] // 2 wide) and `layers[1:]` are the ReLU hidden layers.
    """

    def __init__(self, space: ModelContext, layers: Sequence[int], l2: float,
                 features: RankingFeatures | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dim = max(layers[0] // 2, 1)
        self.user_embedding = id_embedding(len(space.vocab.user_ids), dim, l2, name="user_embedding")
        self.item_embedding = id_embedding(len(space.vocab.item_ids), dim, l2, name="item_embedding")
        self.features = features
        self.hidden = [keras.layers.Dense(width, activation="relu", name=f"hidden_{i}")
                       for i, width in enumerate(layers[1:])]

    def call(self, users: tf.Tensor, items: tf.Tensor, inputs: dict[str, tf.Tensor]) -> tf.Tensor:
        """Args: users [B], items [B, N] int64 codes; inputs: the signature inputs. Returns: [B, N, D]."""
        item_vectors = self.item_embedding(items)
        user_vectors = tf.tile(self.user_embedding(users)[:, None, :], [1, tf.shape(items)[1], 1])
        parts = [user_vectors, item_vectors]
        if self.features is not None:
            parts.append(self.features(inputs))
        hidden = tf.concat(parts, axis=-1)
        for layer in self.hidden:
            hidden = layer(hidden)
        return hidden


class NeuMF(RankingModel):
    """NeuMF, or one of its branches (GMF: mlp_layers=None; MLP: gmf_dim=None), optionally with features."""

    def __init__(self, space: ModelContext, gmf_dim: int | None, mlp_layers: Sequence[int] | None, l2: float = 0.0,
                 features: RankingFeatures | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if gmf_dim is None and mlp_layers is None:
            raise ValueError("NeuMF needs a GMF branch, an MLP branch or both")
        if features is not None and mlp_layers is None:
            raise ValueError("the ranking features enter the MLP branch: give mlp_layers")
        self.users, self.items = string_lookup(space.vocab.user_ids), string_lookup(space.vocab.item_ids)
        self.gmf = GmfBranch(space, gmf_dim, l2, name="gmf") if gmf_dim is not None else None
        self.mlp = MlpBranch(space, mlp_layers, l2, features, name="mlp") if mlp_layers is not None else None
        self.output_layer = keras.layers.Dense(1, kernel_initializer="lecun_uniform", name="prediction")
        self.feature_keys = ALL_INPUTS + features.context_inputs if features is not None else ID_INPUTS

    @property
    def features(self) -> RankingFeatures | None:
        return self.mlp.features if self.mlp is not None else None

    def fit_statistics(self, inputs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        if self.features is not None:
            self.features.adapt(inputs)

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        users, items = self.users(inputs[contract.USER_ID]), self.items(inputs[contract.CANDIDATE_IDS])
        parts = []
        if self.gmf is not None:
            parts.append(self.gmf(users, items))
        if self.mlp is not None:
            parts.append(self.mlp(users, items, inputs))
        return tf.squeeze(self.output_layer(tf.concat(parts, axis=-1)), axis=-1)


def dummy_request(batch: int = 1, candidates: int = 1) -> dict[str, tf.Tensor]:
    """A request with every signature input at its default ("unknown") value."""
    return {spec.name: tf.fill([batch, candidates] if spec.rank == 2 else [batch],
                               tf.constant(spec.default, tf.dtypes.as_dtype(spec.dtype)))
            for spec in contract.RANKING_INPUTS}


def build_model(name: str, space: ModelContext, config: RankingConfig,
                retrieval_scorer: keras.layers.Layer | None = None) -> RankingModel:
    """The ranking model called `name` (one of config.RANKING_MODELS).

    Args:
        name: "itempop", "mf", "gmf", "mlp", "neumf", "neumf_pretrained" (NeuMF's architecture;
            trainer.ranking.pretrain fills its weights) or "full" (NeuMF + YouTube ranking features).
        space: the vocabularies and catalogue.
        config: sizes (embedding_dim, mlp_layers, feature_embedding_dim, l2_regularization, num_quantiles).
        retrieval_scorer: for "full", a layer giving the candidate generator's score [B, N] as a feature.

    Raises:
        ValueError: an unknown model name.
    """
    l2 = config.l2_regularization
    if name == "itempop":
        return ItemPop(space, name=name)
    if name == "mf":
        return MatrixFactorization(space, config.embedding_dim, l2, name=name)
    if name == "gmf":
        return NeuMF(space, config.embedding_dim, None, l2, name=name)
    if name == "mlp":
        return NeuMF(space, None, config.mlp_layers, l2, name=name)
    if name in ("neumf", "neumf_pretrained"):
        return NeuMF(space, config.embedding_dim, config.mlp_layers, l2, name=name)
    if name == "full":
        features = RankingFeatures(space, config.feature_embedding_dim, config.num_quantiles, retrieval_scorer,
                                   name="ranking_features")
        return NeuMF(space, config.embedding_dim, config.mlp_layers, l2, features=features, name=name)
    raise ValueError(f"unknown ranking model {name!r}; choose one of {', '.join(RANKING_MODELS)}")
