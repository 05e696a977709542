"""Everything the training stages need from the data, prepared once per run."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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
        trained_on: what the models trained on this data see (`trained_on`), for metrics.json and the
            export metadata.
        impression_sample: with `shards` whose log had impressions, `impression_examples` of a sample of the
            training impressions (the ranking statistics; the ranker streams them all from the shards);
            otherwise None (impressions in memory are `dataset.impressions`).
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
    trained_on: dict[str, Any] = dataclasses.field(default_factory=dict)
    impression_sample: dict[str, np.ndarray] | None = None

    @property
    def has_impressions(self) -> bool:
        """Whether the logs hold impressions (in memory or in the shards)."""
        return self.dataset.impressions is not None or self.impression_sample is not None


def prepare(config: Config) -> TrainingData:
    """Loads `config.data.source`, splits it by time and builds vocabularies, catalogue and examples."""
    data = config.data
    dataset = load_dataset(data, config.synthetic)
    split = temporal_split(dataset.events, data.validation_fraction, data.test_fraction)
    train_times = split.train["timestamp"].to_numpy()
    t_max = int(train_times.max())

    def examples(events: pd.DataFrame) -> dict[str, np.ndarray]:
        return event_examples(events, dataset.users, data.history_length, data.search_history_length,
                              history_events=dataset.events, impressions=dataset.impressions)

    vocab = Vocabularies.from_training(split.train, dataset.users, dataset.items)
    prepared = TrainingData(
        dataset=dataset,
        split=split,
        vocab=vocab,
        catalog=ItemCatalog.from_items(dataset.items),
        t_max=t_max,
        t_span=max(1, t_max - int(train_times.min())),
        train_examples=examples(split.train),
        validation_examples=examples(split.validation),
        test_examples=examples(split.test),
        history_length=data.history_length,
        search_history_length=data.search_history_length,
        available_features=dataset.available(),
        trained_on=trained_on(("train",), len(split.train), int(train_times.min()), t_max, vocab, refit=False),
    )
    LOGGER.info("%s: %d events (train %d, validation %d, test %d), %d users, %d items", dataset.name,
                len(dataset.events), len(split.train), len(split.validation), len(split.test),
                len(dataset.users), len(dataset.items))
    return prepared


def trained_on(periods: Sequence[str], events: int, first_time: int, last_time: int, vocab: Vocabularies,
               refit: bool) -> dict[str, Any]:
    """What models trained on a split see: its periods, events, time range and vocabulary sizes.

    Args:
        periods: the temporal periods of the training events ("train", "validation", "test").
        events: the number of training events.
        first_time, last_time: unix seconds of the first and the last training event.
        vocab: the vocabularies built from those events.
        refit: whether this is the whole log that the models are refitted on (`export.refit`).
    """
    return {"refit": refit, "periods": list(periods), "events": int(events),
            "first_event_time": int(first_time), "last_event_time": int(last_time),
            "time_range_utc": [_utc(first_time), _utc(last_time)],
            "users": len(vocab.user_ids), "items": len(vocab.item_ids)}


def whole_log(data: TrainingData) -> TrainingData:
    """`data` with every event (train, validation and test) as the training split, for the refit.

    Vocabularies, t_max and t_span come from the whole log; the catalogue is unchanged (every item of
    the item table). The validation and test splits are empty: the refit has nothing held out.
    """
    split = data.split
    events = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    times = events["timestamp"].to_numpy()
    t_max, t_min = int(times.max()), int(times.min())
    vocab = Vocabularies.from_training(events, data.dataset.users, data.dataset.items)
    parts = (data.train_examples, data.validation_examples, data.test_examples)
    examples = {name: np.concatenate([part[name] for part in parts]) for name in data.train_examples}
    periods = [name for name, part in zip(("train", "validation", "test"), (split.train, split.validation,
                                                                            split.test)) if len(part)]
    return dataclasses.replace(
        data, split=empty_after(events, t_max), vocab=vocab, t_max=t_max, t_span=max(1, t_max - t_min),
        train_examples=examples, validation_examples=no_examples(examples),
        test_examples=no_examples(examples),
        trained_on=trained_on(periods, len(events), t_min, t_max, vocab, refit=True))


def empty_after(events: pd.DataFrame, t_max: int) -> TemporalSplit:
    """A split whose training side is `events` and whose validation and test sides are empty."""
    return TemporalSplit(events, events.iloc[:0], events.iloc[:0], t_max + 1, t_max + 1)


def no_examples(examples: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Zero rows of the same features, dtypes and widths as `examples`."""
    return {name: values[:0] for name, values in examples.items()}


def _utc(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(int(seconds), datetime.timezone.utc).isoformat()
