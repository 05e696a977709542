"""Loads the configured source as a validated `Dataset` (docs/DESIGN.md, "Data contract")."""

from __future__ import annotations

import dataclasses
import logging

from trainer.config import LOGS_SOURCE, MOVIELENS_SOURCES, DataConfig, SyntheticConfig
from trainer.data.schema import DataError, Dataset
from trainer.run import LOGGER_NAME

LOGGER = logging.getLogger(LOGGER_NAME)


def load_dataset(data: DataConfig, synthetic: SyntheticConfig) -> Dataset:
    """The dataset of `data.source` ("synthetic", "logs" (CSV files in `data.data_dir`) or a MovieLens name).

    Users with fewer than `data.min_events_per_user` events are removed from the events
    (logged with their count), since neither split protocol can evaluate them.

    Raises:
        DataError: the source is unknown, its files are missing or malformed, or nothing is left.
    """
    if data.source == "synthetic":
        from trainer.data.synthetic import generate

        dataset = generate(synthetic)
    elif data.source in MOVIELENS_SOURCES:
        from trainer.data.movielens import load_movielens

        dataset = load_movielens(data.source, data.data_dir, data.cache_dir, data.download)
    elif data.source == LOGS_SOURCE:
        from trainer.data.logs import load_logs

        if data.data_dir is None:
            raise DataError("data.source logs reads the CSV files of data.data_dir (--data-dir), which is not set")
        dataset = load_logs(data.data_dir)
    else:
        raise DataError(
            f"unknown data source {data.source!r}; choose synthetic, logs or one of {', '.join(MOVIELENS_SOURCES)}"
        )
    return drop_sparse_users(dataset, data.min_events_per_user)


def drop_sparse_users(dataset: Dataset, min_events_per_user: int) -> Dataset:
    """`dataset` without the events (and impressions) of users that have fewer than `min_events_per_user` events."""
    counts = dataset.events.groupby("user_id")["item_id"].transform("size")
    keep = counts >= min_events_per_user
    if keep.all():
        return dataset
    dropped_users = dataset.events.loc[~keep, "user_id"].nunique()
    LOGGER.info("%s: dropping %d events of %d users with fewer than %d events (data.min_events_per_user)",
                dataset.name, int((~keep).sum()), dropped_users, min_events_per_user)
    events = dataset.events[keep].reset_index(drop=True)
    if events.empty:
        raise DataError(f"{dataset.name}: no user has at least {min_events_per_user} events (data.min_events_per_user)")
    impressions = dataset.impressions
    if impressions is not None:
        kept_users = events["user_id"].unique()
        impressions = impressions[impressions["user_id"].isin(kept_users)].reset_index(drop=True)
    return dataclasses.replace(dataset, events=events, impressions=impressions)
