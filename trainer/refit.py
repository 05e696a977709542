"""Refit on the whole log before export (`export.refit`, on by default).

Model selection happens on the temporal split: the models train on the training period, early
stopping watches the validation period and the test period gives the reported metrics. What is
exported then is trained afresh on every event (train, validation and test), with the selected
hyper-parameters and the epoch counts early stopping chose, so the served models know the newest
users and items: the vocabularies, t_max (item and example ages) and the logQ item frequencies come
from the whole log, and the index holds every catalogue item (an item without events is embedded from
its genres, title and age, its id embedding being the zero out-of-vocabulary row).

The refitted models carry the held-out metrics of the selected ones (nothing is left to evaluate
them on); `trained_on` of their `TrainingData` says what they saw, in metrics.json ("refit") and in the
export metadata. The retrieval stage refits first, as the ranking model's retrieval-score feature is
the refitted candidate generator's.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from trainer.config import Config
from trainer.data import bundle
from trainer.data.prepared import whole_log_prepared
from trainer.run import RunContext

if TYPE_CHECKING:
    import tensorflow as tf

    from trainer.ranking.train import RankingResult
    from trainer.retrieval.train import RetrievalResult

STAGE = "refit"


@dataclasses.dataclass
class Refit:
    """The models to export and the data they were trained on."""

    data: bundle.TrainingData
    retrieval: RetrievalResult
    ranking: RankingResult


def whole_log(config: Config, data: bundle.TrainingData) -> bundle.TrainingData:
    """`data` with every event as training data (in memory, or every shard of `data.prepared_dir`)."""
    if data.shards is not None:
        return whole_log_prepared(data, config.data.seed)
    return bundle.whole_log(data)


def refit(config: Config, data: bundle.TrainingData, run: RunContext, retrieval: RetrievalResult,
          ranking: RankingResult, retrieval_strategy: tf.distribute.Strategy | None = None,
          ranking_strategy: tf.distribute.Strategy | None = None) -> Refit:
    """Trains both stages on the whole log for their selected epochs; records the "refit" metrics.

    Args:
        config: the run config (the selected hyper-parameters).
        data: the data model selection used (its temporal split).
        run: the run folder (checkpoints of the refit: `retrieval_refit/`, `ranking/refit/`).
        retrieval, ranking: the selected models (their metrics and selected epochs).
        retrieval_strategy, ranking_strategy: what each stage trains under, as in model selection.
    """
    from trainer.ranking.train import refit_ranking
    from trainer.retrieval.train import refit_retrieval, selected_epochs

    whole = whole_log(config, data)
    seen = whole.trained_on
    run.log.info("refit: training both stages on all %d events (%s to %s) for the selected epochs: retrieval %d, "
                 "ranking %s", seen["events"], *seen["time_range_utc"], selected_epochs(retrieval),
                 ranking.selected_epochs)
    refitted_retrieval = refit_retrieval(config, whole, run, retrieval, retrieval_strategy)
    refitted_ranking = refit_ranking(config, whole, run, ranking, refitted_retrieval, ranking_strategy)
    return Refit(whole, refitted_retrieval, refitted_ranking)


def summary(data: bundle.TrainingData, retrieval: RetrievalResult, ranking: RankingResult) -> dict[str, Any]:
    """The metrics.json "refit" section of the exported models: what they saw, for how many epochs (the
    selected ones: the weights kept with `export.refit` off, the epochs trained with it on)."""
    from trainer.retrieval.train import selected_epochs

    return {**data.trained_on, "catalog_items": len(data.catalog), "retrieval_epochs": selected_epochs(retrieval),
            "ranking_epochs": dict(ranking.selected_epochs)}
