"""The TFRS tutorial protocol, for figures comparable with the TensorFlow Recommenders tutorials.

The "basic retrieval" tutorial trains an ID-only two-tower model (user id and movie
embeddings of size 32, no tower) on a random 80% of MovieLens-100k with Adagrad(0.1), batch
8192, 3 epochs, and reports `FactorizedTopK` top-100 accuracy on the other 20% (about 0.23;
the "deep retrieval" tutorial reaches about 0.29). `run_tutorial_protocol` trains that
baseline and the configured candidate generator on the same split and evaluates both with
the same metric over every catalogue item. The generator's requests are built like serving
requests: each held-out event's context is the user's strictly earlier events.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from trainer.config import Config
from trainer.context import ModelContext
from trainer.data.catalog import ItemCatalog
from trainer.data.examples import event_examples
from trainer.data.pipeline import make_dataset
from trainer.data.schema import Dataset
from trainer.data.vocab import Vocabularies
from trainer.retrieval.evaluate import factorized_top_k_accuracy
from trainer.retrieval.features import FeatureSet
from trainer.retrieval.inputs import InMemoryTrainingInput
from trainer.retrieval.model import embed_items, embed_queries
from trainer.retrieval.train import build_model, fit

TEST_FRACTION = 0.2
TUTORIAL_DIM = 32
TUTORIAL_LEARNING_RATE = 0.1
TUTORIAL_BATCH = 8192
TUTORIAL_EPOCHS = 3
KS = (1, 5, 10, 50, 100)


def random_split(events: pd.DataFrame, test_fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Shuffles the events with `seed` and holds out the last `test_fraction` (the tutorial's split)."""
    order = np.random.default_rng(seed).permutation(len(events))
    cut = round(len(events) * (1.0 - test_fraction))
    return (events.iloc[np.sort(order[:cut])].reset_index(drop=True),
            events.iloc[np.sort(order[cut:])].reset_index(drop=True))


class TutorialModel(tfrs.models.Model):
    """The basic-retrieval tutorial's model: user and item id embeddings, dot product, in-batch softmax."""

    def __init__(self, user_ids: Sequence[str], item_ids: Sequence[str], dim: int = TUTORIAL_DIM) -> None:
        super().__init__()
        self.user_model = keras.Sequential([keras.layers.StringLookup(vocabulary=list(user_ids), mask_token=None),
                                               keras.layers.Embedding(len(user_ids) + 1, dim)])
        self.item_model = keras.Sequential([keras.layers.StringLookup(vocabulary=list(item_ids), mask_token=None),
                                               keras.layers.Embedding(len(item_ids) + 1, dim)])
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """Args: features with user_id [B] and item_id [B] strings."""
        return self.task(self.user_model(features["user_id"]), self.item_model(features["item_id"]),
                         compute_metrics=False)


@dataclasses.dataclass
class TutorialSplit:
    """The model inputs built from a random split of a dataset."""

    train_examples: dict[str, np.ndarray]
    test_examples: dict[str, np.ndarray]
    vocab: Vocabularies
    catalog: ItemCatalog
    t_max: int
    t_span: int


def make_tutorial_split(dataset: Dataset, history_length: int, search_history_length: int,
                        seed: int) -> TutorialSplit:
    """The 80/20 random split with serving-style contexts (strictly earlier events of the user)."""
    train, test = random_split(dataset.events, TEST_FRACTION, seed)
    times = train["timestamp"].to_numpy()
    return TutorialSplit(
        train_examples=event_examples(train, dataset.users, history_length, search_history_length),
        test_examples=event_examples(test, dataset.users, history_length, search_history_length,
                                     history_events=train),
        vocab=Vocabularies.from_training(train, dataset.users, dataset.items),
        catalog=ItemCatalog.from_items(dataset.items),
        t_max=int(times.max()),
        t_span=max(1, int(times.max() - times.min())),
    )


def train_tutorial_baseline(split: TutorialSplit, dataset: Dataset, seed: int) -> dict[str, float]:
    """Trains the tutorial's ID-only model as the tutorial does; its top-K accuracy on the held-out 20%."""
    keras.utils.set_random_seed(seed)
    model = TutorialModel(sorted(set(dataset.events["user_id"])), [str(i) for i in split.catalog.item_ids])
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=TUTORIAL_LEARNING_RATE))
    pairs = {"user_id": split.train_examples["user_id"], "item_id": split.train_examples["item_id"]}
    model.fit(make_dataset(pairs, TUTORIAL_BATCH, shuffle=True, seed=seed), epochs=TUTORIAL_EPOCHS, verbose=0)
    items = split.catalog.item_ids
    queries = model.user_model(tf.constant(split.test_examples["user_id"].astype(str))).numpy()
    item_embeddings = model.item_model(tf.constant(items.astype(str))).numpy()
    return factorized_top_k_accuracy(queries, split.test_examples["item_id"], items, item_embeddings, KS)


def train_generator_on_split(config: Config, split: TutorialSplit, available: set[str],
                             log: logging.Logger) -> dict[str, float]:
    """Trains the configured candidate generator on the split (all epochs, no validation); its top-K accuracy."""
    keras.utils.set_random_seed(config.seed)
    features = FeatureSet.resolve(config.retrieval.features, available)
    context = ModelContext.build(split.vocab, split.catalog, split.t_max, split.t_span)
    model = build_model(config.retrieval, features, context)
    fit(model, config.retrieval, InMemoryTrainingInput(split.train_examples, split.t_max, split.t_span), None,
        config.seed, None, None, log)
    items = split.catalog.item_ids
    queries = embed_queries(model.query_tower, split.test_examples)
    item_embeddings = embed_items(model.candidate_tower, items)
    return factorized_top_k_accuracy(queries, split.test_examples["item_id"], items, item_embeddings, KS)


def run_tutorial_protocol(config: Config, dataset: Dataset, log: logging.Logger) -> dict[str, dict[str, float]]:
    """Both models on one random split: {"tutorial_basic": {...}, "candidate_generator": {...}}."""
    split = make_tutorial_split(dataset, config.data.history_length, config.data.search_history_length, config.seed)
    return {
        "tutorial_basic": train_tutorial_baseline(split, dataset, config.seed),
        "candidate_generator": train_generator_on_split(config, split, dataset.available(), log),
    }
