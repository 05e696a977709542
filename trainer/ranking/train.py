"""Training the ranking models: pointwise weighted logistic regression on impressions or on sampled negatives.

When the logs hold impressions (`ranking.train_on`), each training-period impression is one row: the shown item,
labelled by its click and weighted by its watch time (`trainer.ranking.rows.ImpressionRecipe`), as the YouTube
paper trains its ranker; nothing is sampled. Otherwise each training event is one row (`trainer.ranking.rows`,
the same tf.data map whether the events are in memory or in TFRecord shards): its context, the watched item
(label 1, weight = its watch time / unit, trainer.ranking.loss) and `num_negatives` items the user never watched
in training (label 0, weight 1), drawn afresh every epoch. The candidates of a row go through the model together
as candidate_ids [B, 1 + num_negatives], exactly the serving signature's layout.

Models train with Keras `fit` and the callbacks of `trainer.fitting`: a backup of model and
optimizer every epoch in the run folder (with `ranking.resume` a killed run continues after its
last epoch), and with a validation set the epoch of best validation NDCG@10 (or the starting
weights, when no epoch beats them), stopping after `early_stopping_patience` epochs without
improvement.

Under a multi-replica strategy (MultiWorkerMirroredStrategy, `trainer.distribute`) every worker
runs the same `fit`: the models are built under the strategy, each epoch's rows are shuffled
alike on every worker and each input pipeline takes its slice of every global batch, and the
optimizer all-reduces the gradients, so the weights and therefore every validation decision
stay identical on all workers.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import pathlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

import trainer  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)

# isort: split
import tensorflow as tf
import tf_keras as keras

from recsys_common import contract
from trainer import fitting
from trainer.config import Config, RankingConfig
from trainer.context import ModelContext
from trainer.data.examples import CLICKED, WATCH_TIME
from trainer.data.tfrecord import EVENTS, IMPRESSIONS
from trainer.optimizers import make_optimizer
from trainer.ranking import evaluate
from trainer.ranking.loss import negative_sampling_rate, watch_time_unit
from trainer.ranking.models import LABELS, WEIGHTS, NeuMF, RankingModel, build_model
from trainer.ranking.pretrain import load_pretrained
from trainer.ranking.protocol import (
    USER_INPUT_NAMES,
    RankingData,
    SampledSet,
    items_by_user,
    ncf_protocol,
    temporal_protocol,
    training_impressions,
)
from trainer.ranking.rows import (
    CandidatePools,
    ExampleSource,
    ImpressionRecipe,
    InMemoryExamples,
    NegativeDraws,
    Recipe,
    RowRecipe,
    RowScores,
    StreamedExamples,
    TrainingRows,
)
from trainer.ranking.signature import RankingSignature
from trainer.run import RunContext

if TYPE_CHECKING:
    from trainer.data.bundle import TrainingData
    from trainer.retrieval.train import RetrievalResult

LOGGER = logging.getLogger("trainer")
STAGE = "ranking"
VALIDATION_METRIC = "ndcg@10"
VALIDATION_PREFIX = "validation_"
_ADAPT_ROWS = 20_000


@dataclasses.dataclass
class FitOptions:
    """How one model is trained."""

    epochs: int
    batch_size: int
    num_negatives: int
    optimizer: str
    learning_rate: float
    patience: int
    seed: int
    resume: bool = True
    candidate_negatives: int = 0
    watch_time_weights: bool = True

    @classmethod
    def from_config(cls, config: RankingConfig, seed: int, pretrained: bool = False) -> FitOptions:
        return cls(epochs=config.epochs, batch_size=config.batch_size, num_negatives=config.num_negatives,
                   candidate_negatives=config.candidate_negatives, watch_time_weights=config.watch_time_weights,
                   optimizer=config.pretrained_optimizer if pretrained else config.optimizer,
                   learning_rate=config.pretrained_learning_rate if pretrained else config.learning_rate,
                   patience=config.early_stopping_patience, seed=seed, resume=config.resume)


@dataclasses.dataclass
class RankingResult:
    """A trained ranking model and what was measured about it.

    Attributes:
        model: the model that is exported (config.ranking.model, trained on the temporal split).
        model_name: its name in config.RANKING_MODELS.
        space: the model context it was built from (vocabularies, catalogue, time range).
        watch_time_unit: the watch time of weight 1.
        sampling_rate: loss.negative_sampling_rate of its training rows (expected_watch_time =
            exp(logit) * unit * sampling_rate, calibrated for the sampled negatives).
        metrics: validation/test metrics of the model, and two-stage metrics when retrieval was given.
        comparison: one row per model of the NCF-protocol comparison table.
        history: per-epoch training loss and validation metrics.
        config: the ranking config it was trained with.
        selected_epochs: model name -> the epochs that model selection chose for it (the best validation
            epoch; 0 = the initial weights), for `model` and the models it is built from; what a refit trains.
    """

    model: RankingModel
    model_name: str
    space: ModelContext
    watch_time_unit: float
    sampling_rate: float
    metrics: dict[str, float]
    comparison: list[dict[str, Any]]
    history: dict[str, list[float]]
    config: RankingConfig = dataclasses.field(default_factory=RankingConfig)
    selected_epochs: dict[str, int] = dataclasses.field(default_factory=dict)
    _signature: RankingSignature | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def signature(self) -> RankingSignature:
        """The serving function over `model` (built once, so in-memory scoring traces once)."""
        if self._signature is None:
            self._signature = RankingSignature(self.model, self.watch_time_unit, self.sampling_rate)
        return self._signature


def fit(model: RankingModel, data: RankingData, options: FitOptions, checkpoint_dir: pathlib.Path | None = None,
        tensorboard_dir: pathlib.Path | None = None, strategy: tf.distribute.Strategy | None = None
        ) -> dict[str, list[float]]:
    """Trains `model` on `data.train`; returns the per-epoch history (loss, validation metrics).

    Models that count rather than learn (ItemPop) are fitted in one pass and not checkpointed.
    `model` must have been built under `strategy` (None: the default strategy).
    """
    return _fit(model, data, options, checkpoint_dir, tensorboard_dir, strategy)[0]


def _fit(model: RankingModel, data: RankingData, options: FitOptions, checkpoint_dir: pathlib.Path | None,
         tensorboard_dir: pathlib.Path | None, strategy: tf.distribute.Strategy | None
         ) -> tuple[dict[str, list[float]], int]:
    """`fit`, also returning the selected epoch count (the best validation epoch, else every epoch trained)."""
    strategy = strategy or tf.distribute.get_strategy()
    recipe = row_recipe(data, model.feature_keys, options)
    with strategy.scope():
        model.create_weights()
    examples = data.training_examples
    if not model.learns_by_gradient:
        model.fit_statistics(*_statistics_rows(recipe, examples, None, options.seed))
        return {}, 0
    if not options.resume:
        fitting.forget(checkpoint_dir)
    start, epochs = fitting.epochs_to_train(checkpoint_dir, options.epochs)
    if start == 0:  # a resumed model gets its statistics back with its weights
        model.fit_statistics(*_statistics_rows(recipe, examples, _ADAPT_ROWS, options.seed))
    if epochs == 0:  # a refit of a model whose starting weights validated best trains nothing
        LOGGER.warning("ranking %s/%s: 0 epochs to train, keeping the starting weights", data.name, model.name)
        return {}, 0
    rows = _training_rows(data, recipe, options, strategy)
    with strategy.scope():
        model.compile(optimizer=make_optimizer(options.optimizer, options.learning_rate))
    history = fitting.RunHistory(VALIDATION_PREFIX, checkpoint_dir)
    validation, selection = _model_selection(data, options.patience, checkpoint_dir)
    report = fitting.Report(f"ranking {data.name}/{model.name}", rows.steps, LOGGER)
    callbacks = fitting.training_callbacks(history, checkpoint_dir, tensorboard_dir, report, validation, selection)
    model.fit(rows.dataset(start, epochs), epochs=epochs, steps_per_epoch=rows.steps, callbacks=callbacks,
              verbose=0)
    trained = len(history.history.get("loss", []))
    return history.history, selection.selected_epochs if selection is not None else trained


def _model_selection(data: RankingData, patience: int, checkpoint_dir: pathlib.Path | None
                     ) -> tuple[fitting.ValidationMetrics | None, fitting.SelectBestEpoch | None]:
    """Per-epoch validation and early stopping on it (the starting weights count), when there is a validation set."""
    if data.validation is None:
        return None, None
    validate = functools.partial(evaluate.evaluate_sampled, held_out=data.validation)
    return (fitting.ValidationMetrics(validate, VALIDATION_PREFIX),
            fitting.SelectBestEpoch(VALIDATION_PREFIX + VALIDATION_METRIC, patience, checkpoint_dir,
                                    score_start=lambda model: validate(model)[VALIDATION_METRIC]))


def train_model(name: str, data: RankingData, config: Config, trained: dict[str, RankingModel] | None = None,
                run: RunContext | None = None, retrieval_scorer: keras.layers.Layer | None = None,
                strategy: tf.distribute.Strategy | None = None, epochs: Mapping[str, int] | None = None,
                selected: dict[str, int] | None = None) -> tuple[RankingModel, dict[str, list[float]]]:
    """Builds and trains the model called `name` on `data`.

    "neumf_pretrained" takes its GMF and MLP from `trained` (training them first when absent) and
    is then fine-tuned with ranking.pretrained_optimizer / pretrained_learning_rate.

    Args:
        name: one of config.RANKING_MODELS.
        data: the protocol's data.
        config: the run config (ranking section and seed).
        trained: models trained earlier on the same `data`, by name; trained models are added to it.
        run: where checkpoints and TensorBoard summaries go (none without a run).
        retrieval_scorer: for "full", the candidate generator's score as a feature.
        strategy: the tf.distribute strategy to build and train under (None: the default strategy).
        epochs: model name -> a fixed number of epochs (a refit), instead of ranking.epochs.
        selected: receives model name -> its selected epoch count, for this model and any it trains first.
    """
    trained = {} if trained is None else trained
    strategy = strategy or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)  # the same initial weights for the same config
    with strategy.scope():
        model = build_model(name, data.space, config.ranking, retrieval_scorer if name == "full" else None)
    pretrained = name == "neumf_pretrained"
    if pretrained:
        branches = [trained.get(branch) or train_model(branch, data, config, trained, run, strategy=strategy,
                                                       epochs=epochs, selected=selected)[0]
                    for branch in ("gmf", "mlp")]
        with strategy.scope():
            load_pretrained(_as_neumf(model), _as_neumf(branches[0]), _as_neumf(branches[1]),
                            config.ranking.pretrain_alpha)
    where = f"{data.name}/{name}"
    options = FitOptions.from_config(config.ranking, config.seed, pretrained)
    if epochs is not None:
        options.epochs = epochs[name]
    history, best = _fit(model, data, options, run.checkpoint_dir(STAGE) / where if run else None,
                         run.tensorboard_dir(STAGE) / where if run else None, strategy)
    trained[name] = model
    if selected is not None:
        selected[name] = best
    return model, history


def train_ranking(config: Config, data: TrainingData, run: RunContext,
                  retrieval: RetrievalResult | None = None, strategy: tf.distribute.Strategy | None = None
                  ) -> RankingResult:
    """The ranking stage of a run (docs/DESIGN.md, "Packages").

    Trains config.ranking.model on the temporal split, evaluates it (sampled candidates, full ranking
    and, when `retrieval` is given, retrieval top-K re-ranked by it), and writes the NCF-protocol
    comparison of config.ranking.compare (and the model itself) to the run folder
    (ranking_comparison.md / .json). Metrics go to metrics.json under "ranking".

    Args:
        config: the run config.
        data: the prepared data.
        run: the run folder.
        retrieval: the trained candidate generator, or None.
        strategy: a multi-replica strategy to train every model under (each worker runs this function
            alike); None trains on this machine alone.
    """
    from trainer.ranking import retrieval_feature, two_stage

    ranking = config.ranking
    temporal = temporal_protocol(data, config)
    temporal = with_candidate_generator(temporal, config, data, retrieval, run.log)
    strategy = strategy or tf.distribute.get_strategy()
    scorer = _retrieval_scorer(retrieval, strategy)
    selected: dict[str, int] = {}
    model, history = train_model(ranking.model, temporal, config, run=run, retrieval_scorer=scorer, strategy=strategy,
                                 selected=selected)
    metrics = evaluate_model(model, temporal, ranking.eval_ks)
    if retrieval is not None and temporal.full_ranking is not None:
        metrics.update(two_stage.evaluate_two_stage(
            retrieval_feature.retriever_for(retrieval), model, temporal.full_ranking, ranking.rerank_candidates,
            ranking.eval_ks))
    comparison = compare_models(ncf_protocol(data.dataset, config), [*ranking.compare, ranking.model], config, run,
                                strategy)
    run.write_text("ranking_comparison.md", evaluate.comparison_markdown(
        comparison, f"Ranking models, NCF protocol ({data.dataset.name})"))
    run.write_json("ranking_comparison.json", comparison)
    run.record_metrics(STAGE, metrics)
    return RankingResult(model=model, model_name=ranking.model, space=temporal.space,
                         watch_time_unit=training_unit(temporal),
                         sampling_rate=_sampling_rate(ranking, temporal),
                         metrics=metrics, comparison=comparison, history=history, config=ranking,
                         selected_epochs=selected)


def refit_ranking(config: Config, data: TrainingData, run: RunContext, selected: RankingResult,
                  retrieval: RetrievalResult | None = None, strategy: tf.distribute.Strategy | None = None
                  ) -> RankingResult:
    """Trains a fresh `selected.model_name` on `data` (the whole log) for the epochs model selection chose.

    Nothing is held out: no validation, no early stopping, no evaluation; the result keeps `selected`'s
    held-out metrics and comparison. Checkpoints go to the run folder's `ranking/refit/<model>`.

    Args:
        config: the run config.
        data: the whole log (`trainer.refit.whole_log`).
        run: the run folder.
        selected: the ranking trained and evaluated on the temporal split.
        retrieval: the refitted candidate generator (its score is a feature of the full model), or None.
        strategy: the strategy to train under, as `train_ranking`.
    """
    strategy = strategy or tf.distribute.get_strategy()
    whole = whole_log_protocol(data, config)
    whole = with_candidate_generator(whole, config, data, retrieval, run.log)
    model, history = train_model(selected.model_name, whole, config, run=run,
                                 retrieval_scorer=_retrieval_scorer(retrieval, strategy), strategy=strategy,
                                 epochs=selected.selected_epochs)
    return RankingResult(model=model, model_name=selected.model_name, space=whole.space,
                         watch_time_unit=training_unit(whole),
                         sampling_rate=_sampling_rate(selected.config, whole),
                         metrics=dict(selected.metrics),
                         comparison=selected.comparison, history=history, config=selected.config,
                         selected_epochs=dict(selected.selected_epochs))


def whole_log_protocol(data: TrainingData, config: Config) -> RankingData:
    """The refit's ranking data: every event of `data` trains, nothing is held out."""
    space = ModelContext.of_run(data)
    examples = data.train_examples
    inputs = {name: examples[name][:0] for name in USER_INPUT_NAMES}
    inputs[contract.CANDIDATE_IDS] = np.zeros((0, 1), dtype=object)
    return RankingData(name="refit", space=space, train=examples, seen=items_by_user(data.split.train),
                       validation=None, test=SampledSet(inputs, np.zeros(0, np.float32)), full_ranking=None,
                       train_stream=data.shards, impressions=training_impressions(data, config))


def with_candidate_generator(ranking_data: RankingData, config: Config, data: TrainingData,
                             retrieval: RetrievalResult | None, log: logging.Logger) -> RankingData:
    """`ranking_data` (whose training rows are `data.train_examples`) with what the candidate generator
    gives its training rows: the candidate pools of ranking.candidate_negatives and the cross-fitted
    scores of ranking.retrieval_score_folds (each None when off or without a generator)."""
    if ranking_data.impressions is not None:  # no negatives to draw; cross-fitting covers watch rows only
        if config.ranking.retrieval_score_folds >= 2:
            log.warning("ranking.retrieval_score_folds: the ranker trains on impressions, whose retrieval scores "
                        "are not cross-fitted; the generator scores them in-sample")
        return ranking_data
    return dataclasses.replace(ranking_data, candidate_pools=_candidate_pools(config, data, retrieval),
                               out_of_fold=_out_of_fold(config, data, retrieval, log))


def _candidate_pools(config: Config, data: TrainingData, retrieval: RetrievalResult | None
                     ) -> CandidatePools | None:
    """The candidate generator's top `rerank_candidates` unseen items of each training user, when negatives
    are drawn from them (ranking.candidate_negatives > 0 and a candidate generator was trained)."""
    from trainer.ranking import retrieval_feature

    if retrieval is None or not config.ranking.candidate_negatives:
        return None
    return retrieval_feature.candidate_pools(retrieval, data.split.train, data.dataset.users, data.t_max,
                                             data.history_length, data.search_history_length,
                                             config.ranking.rerank_candidates)


def _out_of_fold(config: Config, data: TrainingData, retrieval: RetrievalResult | None, log: logging.Logger
                 ) -> RowScores | None:
    """Cross-fitted retrieval scores of the training rows, when the full model takes the score as a feature
    and ranking.retrieval_score_folds >= 2."""
    from trainer.ranking import retrieval_feature

    folds = config.ranking.retrieval_score_folds
    if retrieval is None or folds < 2 or config.ranking.model != "full":
        return None
    return retrieval_feature.cross_fit(retrieval, data, data.train_examples, folds, config.seed, log)


def _retrieval_scorer(retrieval: RetrievalResult | None, strategy: tf.distribute.Strategy
                      ) -> keras.layers.Layer | None:
    """The candidate generator's score as the full model's feature (built under `strategy`), or None."""
    from trainer.ranking import retrieval_feature

    if retrieval is None:
        return None
    with strategy.scope():
        return retrieval_feature.scorer_for(retrieval)


def evaluate_model(model: RankingModel, data: RankingData, ks: list[int]) -> dict[str, float]:
    """Validation and test metrics on sampled candidates, and full-ranking metrics on the test users."""
    metrics = {f"test_{k}": v for k, v in evaluate.evaluate_sampled(model, data.test).items()}
    if data.validation is not None:
        metrics.update({f"validation_{k}": v for k, v in evaluate.evaluate_sampled(model, data.validation).items()})
    if data.full_ranking is not None:
        metrics.update({f"test_{k}": v for k, v in evaluate.evaluate_full(model, data.full_ranking, ks).items()})
    return metrics


def compare_models(data: RankingData, names: list[str], config: Config, run: RunContext | None = None,
                   strategy: tf.distribute.Strategy | None = None) -> list[dict[str, Any]]:
    """Trains each named model on `data` (under `strategy`) and evaluates it: one table row per model, in order."""
    trained: dict[str, RankingModel] = {}
    rows = []
    for name in dict.fromkeys(names):
        started = time.perf_counter()
        model, history = train_model(name, data, config, trained, run, strategy=strategy)
        row: dict[str, Any] = {"model": name}
        row.update(evaluate_model(model, data, config.ranking.eval_ks))
        row["epochs"] = len(history.get("loss", []))
        row["train_seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        LOGGER.info("ranking comparison (%s): %s", data.name, row)
    return rows


def score(result: RankingResult, features: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """In-memory scoring with the export's own function.

    Args:
        result: a trained ranking.
        features: candidate_ids [B, N] and any user inputs (missing ones take their defaults).

    Returns:
        (scores [B, N] watch probability, expected_watch_time [B, N]).
    """
    return result.signature()(features)


def row_recipe(data: RankingData, feature_keys: tuple[str, ...], options: FitOptions) -> Recipe:
    """How `data`'s training examples become the rows of `options`: its impressions as they were shown, else
    its watches with sampled negatives (and out-of-fold scores)."""
    if data.impressions is not None:
        return ImpressionRecipe(feature_keys, training_unit(data), options.watch_time_weights)
    pools = data.candidate_pools
    negatives = NegativeDraws(data.space.vocab.item_ids, data.seen, options.num_negatives, options.seed, pools,
                              options.candidate_negatives if pools is not None else 0)
    return RowRecipe(negatives, feature_keys, training_unit(data), data.out_of_fold)


def training_unit(data: RankingData) -> float:
    """The watch time of weight 1: the mean known watch time of the training watches (or clicked impressions)."""
    if data.impressions is not None:
        return watch_time_unit(data.impressions[WATCH_TIME][data.impressions[CLICKED]])
    return watch_time_unit(data.train[WATCH_TIME])


def _training_rows(data: RankingData, recipe: Recipe, options: FitOptions, strategy: tf.distribute.Strategy
                   ) -> TrainingRows:
    """The training rows: the impressions when the data has them, else the watches; each streamed from the
    shards when the data has them, else from memory."""
    examples: ExampleSource
    if data.train_stream is not None:
        kind = IMPRESSIONS if data.impressions is not None else EVENTS
        examples = StreamedExamples(data.train_stream, options.seed, kind)
    else:
        examples = InMemoryExamples(data.training_examples, recipe.example_keys_with_rows(), options.seed)
    return TrainingRows(examples, recipe, strategy, options.batch_size)


def _statistics_rows(recipe: Recipe, examples: dict[str, np.ndarray], limit: int | None, seed: int
                     ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Epoch 0's rows of at most `limit` random examples (None: all), in order: (inputs, labels [R, C])."""
    total = len(examples[contract.USER_ID])
    indices = np.arange(total)
    if limit is not None and total > limit:
        indices = np.sort(np.random.default_rng(seed).choice(total, limit, replace=False))
    rows = recipe.rows(examples, 0, indices)
    labels = rows.pop(LABELS)
    rows.pop(WEIGHTS)
    return rows, labels


def _sampling_rate(config: RankingConfig, data: RankingData) -> float:
    """How often training met a given unwatched item as a negative: 1 for impressions, which are not sampled."""
    if data.impressions is not None:
        return 1.0
    pools = data.candidate_pools
    from_candidates = config.candidate_negatives if pools is not None else 0
    return negative_sampling_rate(config.num_negatives, data.train[contract.USER_ID], data.seen,
                                  data.space.vocab.item_ids, from_candidates,
                                  pools.items.shape[1] if pools is not None else 1)


def _as_neumf(model: RankingModel) -> NeuMF:
    if not isinstance(model, NeuMF):
        raise TypeError(f"expected a NeuMF-family model, got {type(model).__name__}")
    return model
