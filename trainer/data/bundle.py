"""Everything the training stages need from the data, prepared once per run."""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from trainer.config import Config
from trainer.data.catalog import ItemCatalog
from trainer.data.examples import event_examples
from trainer.data.schema import Dataset
from trainer.data.sources import load_dataset
from trainer.data.splits import TemporalSplit, temporal_split
from trainer.data.vocab import Vocabularies
from trainer.run import LOGGER_NAME

if TYPE_CHECKING:
    from trainer.data.tfrecord import Manifest

LOGGER = logging.getLogger(LOGGER_NAME)


@dataclasses.dataclass
class TrainingData:
    """The loaded data, its temporal split and the model inputs built from it.

    Attributes:
        dataset: the source's tables.
        split: the temporal split of `dataset.events`.
        vocab: vocabularies of the training split.
        catalog: every item of `dataset.items` (the retrieval index covers them all).
        t_max: the latest training timestamp; t_span: the training time range (> 0), for example age.
        train_examples, validation_examples, test_examples: `event_examples` of each split; the
            contexts use all earlier events (of any split) as history.
        history_length, search_history_length: H and S of the examples.
        available_features: `dataset.available()`, so models drop features the data lacks.
        shards: the preprocessed folder the retrieval and ranking stages stream their training split from
            (`trainer.data.prepared`); None = train from `train_examples`.
    """

    dataset: Dataset
    split: TemporalSplit
    vocab: Vocabularies
    catalog: ItemCatalog
    t_max: int
    t_span: int
    train_examples: dict[str, np.ndarray]
    validation_examples: dict[str, np.ndarray]
    test_examples: dict[str, np.ndarray]
    history_length: int
    search_history_length: int
    available_features: set[str]
    shards: Manifest | None = None


def prepare(config: Config) -> TrainingData:
    """Loads `config.data.source`, splits it by time and builds vocabularies, catalogue and examples."""
    data = config.data
    dataset = load_dataset(data, config.synthetic)
    split = temporal_split(dataset.events, data.validation_fraction, data.test_fraction)
    train_times = split.train["timestamp"].to_numpy()
    t_max = int(train_times.max())

    def examples(events: pd.DataFrame) -> dict[str, np.ndarray]:
        return event_examples(events, dataset.users, data.history_length, data.search_history_length,
                              history_events=dataset.events)

    prepared = TrainingData(
        dataset=dataset,
        split=split,
        vocab=Vocabularies.from_training(split.train, dataset.users, dataset.items),
        catalog=ItemCatalog.from_items(dataset.items),
        t_max=t_max,
        t_span=max(1, t_max - int(train_times.min())),
        train_examples=examples(split.train),
        validation_examples=examples(split.validation),
        test_examples=examples(split.test),
        history_length=data.history_length,
        search_history_length=data.search_history_length,
        available_features=dataset.available(),
    )
    LOGGER.info("%s: %d events (train %d, validation %d, test %d), %d users, %d items", dataset.name,
                len(dataset.events), len(split.train), len(split.validation), len(split.test),
                len(dataset.users), len(dataset.items))
    return prepared
