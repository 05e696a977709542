"""`TrainingData` from a preprocessed folder (`data.prepared_dir`, written by `python -m trainer.preprocess`).

Vocabularies, catalogue, users, t_max and t_span come from the manifest. The training split stays on
disk: both stages stream it from the shards (`TrainingData.shards`). What is held in memory:
the validation and test examples (small), and a uniform random sample of at most
`data.prepared_sample_examples` training examples, from which the ranking stage takes its feature
statistics and its NCF comparison table (the ranking model itself streams the shards,
`trainer.ranking.rows.StreamedExamples`). The event tables are rebuilt from those examples (one event per
example; the events' own queries are not stored, so `query` is empty). When the log had impressions, a
sample of at most as many training impressions (`TrainingData.impression_sample`) gives the statistics of
the ranker, which streams every training impression from their shards.

`whole_log_prepared` is the refit's view of the same folder (`export.refit`): every shard is training data.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections import Counter

import numpy as np
import pandas as pd

from recsys_common import contract
from trainer.config import Config
from trainer.data.bundle import TrainingData, empty_after, no_examples, trained_on
from trainer.data.catalog import ItemCatalog
from trainer.data.examples import CLICKED, ITEM_ID, RATING, WATCH_TIME
from trainer.data.schema import Dataset, validate_events
from trainer.data.splits import TemporalSplit
from trainer.data.tfrecord import EVENTS, IMPRESSIONS, SPLITS, Manifest, Shard
from trainer.data.vocab import Vocabularies
from trainer.run import LOGGER_NAME

LOGGER = logging.getLogger(LOGGER_NAME)
READ_BATCH = 4096


def load_prepared(config: Config) -> TrainingData:
    """The `TrainingData` of `config.data.prepared_dir` (see the module docstring); raises DataError if invalid."""
    assert config.data.prepared_dir is not None
    manifest = Manifest.load(pathlib.Path(config.data.prepared_dir).expanduser())
    _warn_on_length_mismatch(config, manifest)
    users = manifest.users()
    cap = config.data.prepared_sample_examples
    train = sample_examples(manifest, "train", cap, config.data.seed)
    validation, test = read_split(manifest, "validation"), read_split(manifest, "test")
    split = TemporalSplit(events_of(train, manifest.source), events_of(validation, manifest.source),
                          events_of(test, manifest.source), manifest.validation_start, manifest.test_start)
    events = pd.concat([split.train, split.validation, split.test], ignore_index=True)
    level = logging.WARNING if len(train[ITEM_ID]) < manifest.examples("train") else logging.INFO
    LOGGER.log(level, "%s: streaming %d training examples from %d shard(s); %d of them sampled into memory for "
               "ranking (data.prepared_sample_examples=%d); validation %d, test %d examples", manifest.directory,
               manifest.examples("train"), len(manifest.files("train")), len(train[ITEM_ID]), cap,
               len(validation[ITEM_ID]), len(test[ITEM_ID]))
    return TrainingData(
        dataset=Dataset(manifest.source, events, users, manifest.items()),
        split=split, vocab=manifest.vocab, catalog=ItemCatalog.from_items(manifest.items()),
        t_max=manifest.t_max, t_span=manifest.t_span,
        train_examples=train, validation_examples=validation, test_examples=test,
        history_length=manifest.history_length, search_history_length=manifest.search_history_length,
        available_features=set(manifest.available_features), shards=manifest,
        trained_on=trained_on(("train",), manifest.examples("train"), manifest.t_max - manifest.t_span,
                              manifest.t_max, manifest.vocab, refit=False),
        impression_sample=(sample_examples(manifest, "train", cap, config.data.seed, IMPRESSIONS)
                           if manifest.has_impressions else None),
    )


def whole_log_prepared(data: TrainingData, seed: int) -> TrainingData:
    """The refit's `TrainingData` of a preprocessed folder: every shard (train, validation, test) is training data.

    Both stages stream the shards of a manifest whose training split lists all of them, with the item
    counts (logQ), t_max and t_span of the whole log. The vocabularies are the training ones extended by
    what the validation and test examples hold (users, items, the query tokens of their search
    histories); item ids are ranked by their whole-log counts, the other values by their counts in the
    held-out periods (the manifest keeps no training counts of users and query tokens). The in-memory
    sample for the ranking statistics adds the validation and test examples at the training sample's rate.

    Args:
        data: `load_prepared`'s data (its `shards` set).
        seed: seeds the sample of the validation and test examples.
    """
    manifest = data.shards
    if manifest is None:
        raise ValueError("whole_log_prepared: the data has no preprocessed shards")
    later = _concatenate([data.validation_examples, data.test_examples], manifest)
    item_counts = Counter(manifest.train_item_counts)
    item_counts.update(str(item) for item in later[ITEM_ID])
    vocab = _extended_vocabularies(manifest.vocab, later, item_counts, data.dataset.users, data.dataset.items)
    t_min = manifest.t_max - manifest.t_span
    t_max = int(max([manifest.t_max, *later[contract.REQUEST_TIME].tolist()]))
    whole = dataclasses.replace(
        manifest, shards=_all_as_training(manifest.shards), impression_shards=_all_as_training(
            manifest.impression_shards), vocab=vocab, t_max=t_max, t_span=max(1, t_max - t_min),
        validation_start=t_max + 1, test_start=t_max + 1, train_item_counts=dict(item_counts))
    sample = _concatenate([data.train_examples, _at_rate(later, len(data.train_examples[ITEM_ID]) / max(
        1, manifest.examples("train")), seed)], manifest)
    shown = data.impression_sample
    if shown is not None:
        rate = len(shown[ITEM_ID]) / max(1, manifest.examples("train", IMPRESSIONS))
        shown = _concatenate([shown, *(sample_examples(manifest, split, round(rate * manifest.examples(
            split, IMPRESSIONS)), seed, IMPRESSIONS) for split in SPLITS[1:])], manifest, IMPRESSIONS)
    periods = [split for split in SPLITS if manifest.examples(split)]
    return dataclasses.replace(
        data, split=empty_after(events_of(sample, manifest.source), t_max), vocab=vocab, t_max=t_max,
        t_span=whole.t_span, train_examples=sample, validation_examples=no_examples(sample),
        test_examples=no_examples(sample), shards=whole, impression_sample=shown,
        trained_on=trained_on(periods, whole.examples("train"), t_min, t_max, vocab, refit=True))


def _all_as_training(shards: dict[str, list[Shard]]) -> dict[str, list[Shard]]:
    return {"train": [shard for split in SPLITS for shard in shards.get(split, [])], "validation": [], "test": []}


def _extended_vocabularies(vocab: Vocabularies, later: dict[str, np.ndarray], item_counts: Counter[str],
                           users: pd.DataFrame, items: pd.DataFrame) -> Vocabularies:
    """The training vocabularies plus the values of the later examples (see `whole_log_prepared`)."""
    user_counts = Counter({user: 1 for user in vocab.user_ids})
    user_counts.update(str(user) for user in later[contract.USER_ID])
    token_counts = Counter({token: 1 for token in vocab.query_tokens})
    token_counts.update(str(token) for token in np.asarray(later[contract.SEARCH_HISTORY]).ravel() if token)
    return Vocabularies.from_counts(user_counts, item_counts, token_counts, users, items)


def _at_rate(examples: dict[str, np.ndarray], rate: float, seed: int) -> dict[str, np.ndarray]:
    """A seeded uniform sample of about `rate` of the rows (all of them at rate >= 1), in their order."""
    rows = len(examples[ITEM_ID])
    if rate >= 1.0:
        return examples
    keep = np.sort(np.random.default_rng(seed).choice(rows, int(round(rows * rate)), replace=False))
    return {name: values[keep] for name, values in examples.items()}


def read_split(manifest: Manifest, split: str, kind: str = EVENTS) -> dict[str, np.ndarray]:
    """Every example (or impression) of `split` in file order, as `event_examples` (`impression_examples`)
    arrays (str columns as object arrays)."""
    if not manifest.examples(split, kind):
        return _empty(manifest, kind)
    return _concatenate([_numpy(batch) for batch in manifest.read(split, READ_BATCH, kind).as_numpy_iterator()],
                        manifest, kind)


def sample_examples(manifest: Manifest, split: str, limit: int, seed: int, kind: str = EVENTS
                    ) -> dict[str, np.ndarray]:
    """A uniform random sample of at most `limit` examples (or impressions) of `split`, in one streaming pass
    (memory ~ limit)."""
    total = manifest.examples(split, kind)
    if total <= limit:
        return read_split(manifest, split, kind)
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(total, limit, replace=False))
    parts, start = [], 0
    for batch in manifest.read(split, READ_BATCH, kind).as_numpy_iterator():
        size = len(batch[ITEM_ID])
        rows = keep[(keep >= start) & (keep < start + size)] - start
        if len(rows):
            parts.append({name: values[rows] for name, values in _numpy(batch).items()})
        start += size
    return _concatenate(parts, manifest, kind)


def events_of(examples: dict[str, np.ndarray], source: str) -> pd.DataFrame:
    """The contract event table of the examples' target events, sorted by (timestamp, user_id)."""
    events = pd.DataFrame({
        "user_id": examples[contract.USER_ID], "item_id": examples[ITEM_ID],
        "timestamp": examples[contract.REQUEST_TIME], "rating": examples[RATING],
        "watch_time": examples[WATCH_TIME], "query": pd.Series([None] * len(examples[ITEM_ID]), dtype=object),
    })
    if events.empty:  # a split may be empty (e.g. data.validation_fraction 0); validate_events rejects that
        return events.astype({"user_id": str, "item_id": str, "rating": np.float64, "watch_time": np.float64})
    return validate_events(events, source)  # which sorts the events


def _numpy(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A parsed batch with str columns as object arrays and clicked as bool, as the in-memory examples hold them."""
    return {name: (values.astype(str).astype(object) if values.dtype.kind in "SO" else
                   values.astype(bool) if name == CLICKED else values)
            for name, values in batch.items()}


def _concatenate(parts: list[dict[str, np.ndarray]], manifest: Manifest, kind: str = EVENTS) -> dict[str, np.ndarray]:
    if not parts:
        return _empty(manifest, kind)
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


def _empty(manifest: Manifest, kind: str = EVENTS) -> dict[str, np.ndarray]:
    """No examples, with the features, dtypes and widths of the records `Manifest.read` gives."""
    sequences = {contract.WATCH_HISTORY: manifest.history_length,
                 contract.SEARCH_HISTORY: manifest.search_history_length,
                 contract.IMPRESSION_HISTORY: manifest.impression_history_length or 1}
    strings = (contract.USER_ID, contract.GENDER, contract.OCCUPATION, contract.REGION, contract.LANGUAGE, ITEM_ID)
    empty: dict[str, np.ndarray] = {name: np.zeros(0, dtype=object) for name in strings}
    empty.update({name: np.zeros((0, width), dtype=object) for name, width in sequences.items()})
    empty.update({contract.AGE: np.zeros(0, np.int64), contract.REQUEST_TIME: np.zeros(0, np.int64),
                  contract.WATCH_HISTORY_TIMES: np.zeros((0, manifest.history_length), np.int64),
                  WATCH_TIME: np.zeros(0, np.float32), RATING: np.zeros(0, np.float32)})
    if kind == IMPRESSIONS:
        empty[CLICKED] = np.zeros(0, dtype=bool)
    return empty


def _warn_on_length_mismatch(config: Config, manifest: Manifest) -> None:
    configured = (config.data.history_length, config.data.search_history_length)
    stored = (manifest.history_length, manifest.search_history_length)
    if configured != stored:
        LOGGER.warning("data.prepared_dir: the shards were written with (history_length, search_history_length) = "
                       "%s, the config says %s; the shards' lengths are used", stored, configured)
