"""Hyper-parameter search for both stages on the validation split (Optuna, resumable).

    python -m trainer.tune --config configs/movielens-100k.yaml --trials 12 [--study-dir DIR]

Two Optuna studies are kept in one SQLite file (<study-dir>/study.db): "retrieval" first, then
"ranking" (trained on top of the best retrieval model, whose score is one of its features). Each
trial trains on the temporal training split and is judged on the validation period only (the
test period is never scored): retrieval by validation recall@`retrieval.early_stopping_k`, ranking
by validation NDCG@10 of the held-out events against sampled negatives, both the best epoch's
(early stopping picks the epoch count; `epochs` in the config is the ceiling). Retrieval trials
that trail the median of earlier trials at the same epoch are pruned.

`--trials N` is the number of finished trials each study should hold: after a kill, running the
same command again continues where it stopped (a trial that was running is left as it was and
does not count). The best parameters are written as a config for `python -m trainer.task
--config` (<study-dir>/best.yaml unless --output): the input config with the tuned fields
replaced and `epochs` set to the best trial's best epoch.

Exit status: 0 on success, 2 for a bad config, bad arguments or a study dir of another config.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import logging
import pathlib
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from trainer import config as config_lib
from trainer.data.schema import DataError

STAGES = ("retrieval", "ranking")
STUDY_FILE = "study.db"
BEST_FILE = "best.yaml"
CONFIG_KEY = "config_sha256"
# Layer stacks as categorical choices (Optuna stores choices as plain values, so lists go by name).
TOWER_LAYERS = {"32": [32], "64-32": [64, 32], "128-64": [128, 64], "256-128": [256, 128], "128": [128]}
MLP_LAYERS = {"32-16": [32, 16], "64-32-16": [64, 32, 16], "128-64-32": [128, 64, 32], "64-32": [64, 32]}


class TuneError(ValueError):
    """A search that cannot run as asked (the message says what to change)."""


@dataclasses.dataclass
class TrialOutcome:
    """What one trial measured: the objective and the epoch that reached it."""

    value: float
    best_epoch: int
    epochs_run: int


def retrieval_params(trial: Any) -> dict[str, Any]:
    """The retrieval fields one trial tries (keys are `retrieval.<field>`)."""
    return {
        "embedding_dim": trial.suggest_categorical("embedding_dim", [16, 32, 64, 128]),
        "tower_layers": TOWER_LAYERS[trial.suggest_categorical("tower_layers", list(TOWER_LAYERS))],
        "learning_rate": trial.suggest_float("learning_rate", 1e-3, 5e-2, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
        "temperature": trial.suggest_float("temperature", 0.02, 1.0, log=True),
        "l2_normalize": trial.suggest_categorical("l2_normalize", [False, True]),
        "logq_correction": trial.suggest_categorical("logq_correction", [False, True]),
    }


def ranking_params(trial: Any) -> dict[str, Any]:
    """The ranking fields one trial tries (keys are `ranking.<field>`)."""
    return {
        "embedding_dim": trial.suggest_categorical("embedding_dim", [8, 16, 32, 64]),
        "mlp_layers": MLP_LAYERS[trial.suggest_categorical("mlp_layers", list(MLP_LAYERS))],
        "num_negatives": trial.suggest_int("num_negatives", 2, 8),
        "learning_rate": trial.suggest_float("learning_rate", 5e-4, 1e-2, log=True),
        "l2_regularization": trial.suggest_categorical("l2_regularization", [0.0, 1e-6, 1e-5, 1e-4]),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256, 512, 1024]),
    }


def decode_params(stage: str, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's stored parameters as config values (layer names back to lists)."""
    table, key = (TOWER_LAYERS, "tower_layers") if stage == "retrieval" else (MLP_LAYERS, "mlp_layers")
    return {name: table[value] if name == key else value for name, value in params.items()}


def with_params(config: config_lib.Config, stage: str, params: dict[str, Any]) -> config_lib.Config:
    """A copy of `config` with `params` set in section `stage` (validated)."""
    section = dataclasses.replace(getattr(config, stage), **params)
    section.validate()
    return dataclasses.replace(config, **{stage: section})


def run_retrieval_trial(config: config_lib.Config, data: Any, report: Callable[[int, float], None]
                        ) -> tuple[TrialOutcome, Any]:
    """Trains the candidate generator of `config` and validates it every epoch (no test period).

    Args:
        config: the trial's config.
        data: `trainer.data.bundle.TrainingData`.
        report: called with (epoch, validation recall) after every epoch; may raise to stop the trial.

    Returns:
        The outcome and a `RetrievalResult` (its `metrics` empty) for the ranking stage's score feature.
    """
    import functools

    import numpy as np
    import tf_keras as keras

    from trainer.context import ModelContext
    from trainer.retrieval.evaluate import evaluate_model
    from trainer.retrieval.features import FeatureSet
    from trainer.retrieval.model import embed_items
    from trainer.retrieval.train import RetrievalResult, build_model, fit, temporal_eval_set, training_input

    retrieval = config.retrieval
    keras.utils.set_random_seed(config.seed)
    features = FeatureSet.resolve(retrieval.features, data.available_features)
    model = build_model(retrieval, features, ModelContext.of_run(data))
    validation = temporal_eval_set(config, data, "validation")
    if not len(validation):
        raise TuneError("the validation period holds no user with unseen items: raise data.validation_fraction")
    validate = functools.partial(evaluate_model, item_ids=data.catalog.item_ids, eval_set=validation,
                                 ks=[retrieval.early_stopping_k])
    history = fit(model, retrieval, training_input(data), validate, config.seed, None, None,
                  logging.getLogger("trainer.tune"), lambda epoch, record: report(epoch, record["val_recall"]))
    scores = history["val_recall"]
    outcome = TrialOutcome(float(max(scores)), int(np.argmax(scores)) + 1, len(scores))
    result = RetrievalResult(model, {}, history, embed_items(model.candidate_tower, data.catalog.item_ids),
                             data.catalog.item_ids, features, retrieval)
    return outcome, result


def run_ranking_trial(config: config_lib.Config, data: Any, retrieval: Any) -> TrialOutcome:
    """Trains `config.ranking.model` on the temporal split; its best validation NDCG@10 (sampled negatives)."""
    import numpy as np

    from trainer.ranking import retrieval_feature
    from trainer.ranking.protocol import temporal_protocol
    from trainer.ranking.train import VALIDATION_METRIC, train_model, with_candidate_generator

    temporal = temporal_protocol(data, config)
    if temporal.validation is None:
        raise TuneError("the validation period is empty: raise data.validation_fraction")
    temporal = with_candidate_generator(temporal, config, data, retrieval, logging.getLogger("trainer"))
    scorer = retrieval_feature.scorer_for(retrieval)
    _, history = train_model(config.ranking.model, temporal, config, retrieval_scorer=scorer)
    scores = history.get(f"validation_{VALIDATION_METRIC}", [])
    if not scores:
        raise TuneError(f"ranking.model {config.ranking.model!r} does not train by epochs; nothing to tune")
    return TrialOutcome(float(max(scores)), int(np.argmax(scores)) + 1, len(scores))


def config_fingerprint(config: config_lib.Config) -> str:
    """SHA-256 of the resolved config: a study dir belongs to one config."""
    return hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()


def open_study(study_dir: pathlib.Path, stage: str, fingerprint: str, seed: int) -> Any:
    """The stage's study in <study_dir>/study.db (created or loaded), checked against the config."""
    import optuna

    study_dir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(study_dir / STUDY_FILE).resolve()}"
    pruner = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=1) if stage == "retrieval" else None
    study = optuna.create_study(storage=storage, study_name=stage, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=seed), pruner=pruner)
    stored = study.user_attrs.get(CONFIG_KEY)
    if stored is None:
        study.set_user_attr(CONFIG_KEY, fingerprint)
    elif stored != fingerprint:
        raise TuneError(f"{study_dir / STUDY_FILE} holds a search for another config; use a new --study-dir "
                        "or the config it was started with")
    return study


def finished_trials(study: Any) -> list[Any]:
    """The trials that count towards --trials: complete or pruned."""
    import optuna

    states = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    return study.get_trials(deepcopy=False, states=states)


def best_complete(study: Any) -> Any:
    """The best complete trial, or TuneError when none finished."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise TuneError(f"study {study.study_name!r} has no complete trial")
    return max(complete, key=lambda trial: trial.value)


def search(study: Any, stage: str, trials: int, objective: Callable[[Any], float], metric: str,
           echo: Callable[[str], None]) -> None:
    """Runs trials until the study holds `trials` finished ones, echoing one line per trial."""
    import optuna

    done = len(finished_trials(study))
    if done:
        echo(f"[tune] {stage}: resuming, {done} of {trials} trial(s) already finished")
    remaining = max(0, trials - done)

    def line(study: Any, trial: Any) -> None:
        finished = len(finished_trials(study))
        seconds = trial.duration.total_seconds() if trial.duration is not None else 0.0
        if trial.state == optuna.trial.TrialState.COMPLETE:
            outcome = f"{metric} {trial.value:.4f} (best epoch {trial.user_attrs.get('best_epoch')})"
        else:
            outcome = trial.state.name.lower()
        best = f"{study.best_value:.4f} (trial {study.best_trial.number})" if _has_complete(study) else "-"
        echo(f"[tune] {stage} trial {trial.number} ({finished}/{trials}) {outcome} in {seconds:.0f} s; "
             f"best {best}; {json.dumps(trial.params, sort_keys=True)}")

    if remaining:
        study.optimize(objective, n_trials=remaining, callbacks=[line])


def _has_complete(study: Any) -> bool:
    import optuna

    return bool(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))


def best_config_yaml(source: pathlib.Path, best: dict[str, dict[str, Any]], header: str) -> str:
    """The source YAML with each stage's tuned fields replaced; `header` (comment lines) on top."""
    raw = yaml.safe_load(source.read_text()) or {}
    for stage, params in best.items():
        raw.setdefault(stage, {}).update(params)
    comments = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comments + yaml.safe_dump(raw, sort_keys=False)


def tune(config_path: pathlib.Path, config: config_lib.Config, trials: int, study_dir: pathlib.Path,
         output: pathlib.Path, echo: Callable[[str], None], stages: Sequence[str] = STAGES) -> pathlib.Path:
    """The searches of `stages`, then the best config written to `output` (and checked to load).

    A stage not searched keeps its best trial from an earlier run of the study dir, if there is one.
    """
    import optuna

    from trainer.data import bundle

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    fingerprint = config_fingerprint(config)
    data = bundle.prepare(config)
    retrieval_study = open_study(study_dir, "retrieval", fingerprint, config.seed)

    def retrieval_objective(trial: Any) -> float:
        def report(epoch: int, value: float) -> None:
            trial.report(value, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        outcome, _ = run_retrieval_trial(with_params(config, "retrieval", retrieval_params(trial)), data, report)
        trial.set_user_attr("best_epoch", outcome.best_epoch)
        return outcome.value

    metric = f"val recall@{config.retrieval.early_stopping_k}"
    if "retrieval" in stages:
        search(retrieval_study, "retrieval", trials, retrieval_objective, metric, echo)
    best_retrieval = best_complete(retrieval_study)
    retrieval_fields = {**decode_params("retrieval", best_retrieval.params),
                        "epochs": int(best_retrieval.user_attrs["best_epoch"])}
    tuned = with_params(config, "retrieval", retrieval_fields)
    best: dict[str, dict[str, Any]] = {"retrieval": retrieval_fields}
    ranking_study = open_study(study_dir, "ranking", fingerprint, config.seed)
    if "ranking" in stages and len(finished_trials(ranking_study)) < trials:
        echo("[tune] ranking: training the best retrieval model for the retrieval-score feature")
        _, retrieval = run_retrieval_trial(tuned, data, lambda epoch, value: None)

        def ranking_objective(trial: Any) -> float:
            outcome = run_ranking_trial(with_params(tuned, "ranking", ranking_params(trial)), data, retrieval)
            trial.set_user_attr("best_epoch", outcome.best_epoch)
            return outcome.value

        search(ranking_study, "ranking", trials, ranking_objective, "val ndcg@10 (sampled)", echo)
    summary = [f"{len(finished_trials(retrieval_study))} retrieval trials (Optuna TPE), best validation "
               f"recall@{config.retrieval.early_stopping_k} {best_retrieval.value:.4f}"]
    if _has_complete(ranking_study):
        best_ranking = best_complete(ranking_study)
        best["ranking"] = {**decode_params("ranking", best_ranking.params),
                           "epochs": int(best_ranking.user_attrs["best_epoch"])}
        summary.append(f"{len(finished_trials(ranking_study))} ranking trials, best validation NDCG@10 "
                       f"(sampled negatives) {best_ranking.value:.4f}")
    header = (f"Tuned by `python -m trainer.tune --config {config_path} --trials {trials}` on "
              f"{datetime.date.today().isoformat()}, on the validation split only:\n" + ";\n".join(summary)
              + ".\nepochs = the best trial's best epoch (early stopping).")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(best_config_yaml(config_path, best, header))
    config_lib.load_config(output)
    echo(f"[tune] best config: {output}")
    return output


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer.tune", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=pathlib.Path, required=True, help="the YAML config to tune")
    parser.add_argument("--trials", type=int, required=True, help="finished trials per stage (>= 1)")
    parser.add_argument("--study-dir", type=pathlib.Path, default=None,
                        help="where the studies are kept (default runs/tune-<config name>); rerun to resume")
    parser.add_argument("--stages", default=",".join(STAGES),
                        help="comma-separated stages to search, of retrieval,ranking (default both)")
    parser.add_argument("--output", type=pathlib.Path, default=None,
                        help="the best config's YAML (default <study-dir>/best.yaml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.trials < 1:
            raise TuneError(f"--trials must be >= 1, got {args.trials}")
        stages = [name.strip() for name in args.stages.split(",") if name.strip()]
        if not stages or set(stages) - set(STAGES):
            raise TuneError(f"--stages: expected some of {', '.join(STAGES)}, got {args.stages!r}")
        config = config_lib.load_config(args.config)
        study_dir = args.study_dir or pathlib.Path(config.run_dir) / f"tune-{args.config.stem}"
        print(f"[tune] {shlex.join(['python', '-m', 'trainer.tune', *(sys.argv[1:] if argv is None else argv)])}",
              flush=True)
        started = time.perf_counter()
        tune(args.config, config, args.trials, study_dir, args.output or study_dir / BEST_FILE,
             lambda text: print(text, flush=True), stages)
    except (TuneError, config_lib.ConfigError, DataError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"[tune] done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
