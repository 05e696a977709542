"""The single entry point: load data, train retrieval and ranking, evaluate, export.

    python -m trainer.task --config configs/default.yaml
    python -m trainer.task --config configs/movielens-100k.yaml --data-dir ../shared/data/ml-100k
    python -m trainer.task --retrieval.epochs 3 --ranking.model neumf   # any config field

Exit status: 0 on success, 2 for a bad config or bad input data (the message names the
key, file or line), 1 for anything else.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import pathlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from trainer import config as config_lib
from trainer import distribute
from trainer.data.schema import DataError
from trainer.run import RunContext, attach_log_file


@dataclasses.dataclass
class TaskResult:
    """What a run produced: its folder, its metrics and the exported version folders."""

    run: RunContext
    metrics: dict[str, Any]
    exports: dict[str, pathlib.Path]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.task",
        description="Train the two-stage recommender (YouTube-DNN retrieval + NeuMF ranking) and export it "
        "in the TF Serving layout.",
    )
    parser.add_argument("--config", type=pathlib.Path, help="YAML config (default: built-in defaults = "
                        "configs/default.yaml)")
    parser.add_argument("--data-dir", help="local folder of the data source (overrides data.data_dir)")
    parser.add_argument("--output-dir", help="where the SavedModels go (overrides export.output_dir)")
    parser.add_argument("--run-name", help="name of the run folder under run_dir (default: a timestamp)")
    parser.add_argument("--no-export", action="store_true", help="train and evaluate only")
    config_lib.add_config_flags(parser)
    return parser


def resolve_config(args: argparse.Namespace) -> config_lib.Config:
    overrides = config_lib.overrides_from_args(args)
    if args.data_dir is not None:
        overrides["data.data_dir"] = args.data_dir
    if args.output_dir is not None:
        overrides["export.output_dir"] = args.output_dir
    return config_lib.load_config(args.config, overrides)


def run_task(config: config_lib.Config, run_name: str | None = None, export: bool = True,
             role: distribute.ClusterRole | None = None, strategy: Any = None) -> TaskResult:
    """Runs every stage of a training job on a validated config.

    Model selection trains and evaluates both stages on the temporal split (the metrics reported); with
    `export` and `export.refit`, both are then trained again on the whole log (`trainer.refit`) and
    those models are exported.

    In a cluster (`role`, `strategy` from `trainer.distribute`), every worker runs this. With
    MultiWorkerMirroredStrategy both stages train (and refit) under `strategy`, each worker on its share
    of every batch; then the other workers stop (their scratch folders are deleted) and the chief exports.
    With parameter servers the retrieval model trains on the cluster and the chief (the coordinator) trains
    the ranking stage alone.
    """
    _quiet_tensorflow()
    role = role or distribute.ClusterRole()
    run_name = run_name or _timestamp()
    with distribute.worker_scoped_config(config, role, run_name) as worker_config:
        return _run_stages(worker_config, run_name, export, role, strategy or distribute.strategy_for(role))


def _run_stages(config: config_lib.Config, run_name: str, export: bool, role: distribute.ClusterRole,
                strategy: Any) -> TaskResult:
    from recsys_common import contract
    from trainer import refit
    from trainer.data import bundle
    from trainer.data.prepared import load_prepared
    from trainer.export.layout import VersionSet
    from trainer.export.server_configs import write_server_configs
    from trainer.ranking.export import export_ranking
    from trainer.ranking.protocol import check_eval_negatives
    from trainer.ranking.train import train_ranking
    from trainer.retrieval.export import export_retrieval
    from trainer.retrieval.sharding import export_sharded_retrieval, shard_model_names
    from trainer.retrieval.train import train_retrieval

    run = RunContext(pathlib.Path(config.run_dir) / run_name)
    handler = attach_log_file(run)
    try:
        run.write_config(config.to_dict())
        warning = distribute.optimizer_warning(role, config.retrieval.optimizer)
        if warning is not None:
            run.log.warning(warning)
        with _stage(run, "data"):
            data = load_prepared(config) if config.data.prepared_dir else bundle.prepare(config)
            check_eval_negatives(data, config)
        with _stage(run, "retrieval"):
            retrieval = train_retrieval(config, data, run, strategy=strategy)
        ranking_strategy = None if role.uses_parameter_servers else strategy
        with _stage(run, "ranking"):
            ranking = train_ranking(config, data, run, retrieval, strategy=ranking_strategy)
        if export and config.export.refit:
            with _stage(run, refit.STAGE):
                refitted = refit.refit(config, data, run, retrieval, ranking, strategy, ranking_strategy)
            data, retrieval, ranking = refitted.data, refitted.retrieval, refitted.ranking
        if export:
            run.record_metrics(refit.STAGE, refit.summary(data, retrieval, ranking))
        if not role.is_chief:
            run.log.info("%s %d: distributed training done; the chief exports", role.task_type, role.task_id)
            return TaskResult(run=run, metrics=run.metrics(), exports={})
        exports: dict[str, pathlib.Path] = {}
        if export:
            base_dir = pathlib.Path(config.export.output_dir)
            shards = shard_model_names(config.export.num_shards) if config.export.num_shards > 1 else []
            # One version number for every model, published together; a killed export is repaired on entry.
            with _stage(run, "export"), VersionSet(base_dir, [*contract.MODEL_NAMES, *shards], run.log) as versions:
                exports.update(export_retrieval(retrieval, data, config.export, base_dir, versions.stage))
                exports[contract.RANKING] = export_ranking(ranking, data, config.export, base_dir, versions.stage)
                if shards:  # export.num_shards: the index split into models retrieval_shard_<i> as well
                    exports.update(export_sharded_retrieval(retrieval, data, config.export, base_dir,
                                                            publish=versions.stage))
                versions.publish()
                write_server_configs(base_dir, versions.models,
                                     keep_versions=config.export.keep_versions, version_sets=True)
            run.record_metrics("exports", {name: str(path) for name, path in exports.items()})
        return TaskResult(run=run, metrics=run.metrics(), exports=exports)
    finally:
        run.log.removeHandler(handler)
        handler.close()


def summary_table(result: TaskResult) -> str:
    """The metrics of a run as an aligned text table (stage, metric, value)."""
    rows = [("stage", "metric", "value")]
    for stage, metrics in result.metrics.items():
        if isinstance(metrics, dict):
            for name, value in metrics.items():
                if isinstance(value, (int, float, str)):
                    rows.append((stage, name, f"{value:.4f}" if isinstance(value, float) else str(value)))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = resolve_config(args)
        role = distribute.role_from_env()
        strategy = distribute.strategy_for(role)  # before TensorFlow runs anything (multi-worker collectives)
        result = run_task(config, run_name=args.run_name, export=not args.no_export, role=role, strategy=strategy)
    except (config_lib.ConfigError, DataError, distribute.DistributeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary_table(result))
    print(f"\nrun folder: {result.run.root}")
    for name, path in sorted(result.exports.items()):
        print(f"exported {name}: {path}")
    return 0


class _stage:
    """Logs the start, end and wall time of one stage, and records the time in metrics.json."""

    def __init__(self, run: RunContext, name: str) -> None:
        self.run, self.name = run, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()
        self.run.log.info("stage %s: started", self.name)

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        seconds = time.perf_counter() - self.start
        status = "done" if exc_type is None else "failed"
        self.run.log.info("stage %s: %s in %.1f s", self.name, status, seconds)
        if exc_type is None:
            timings = self.run.metrics().get("wall_time_s", {})
            timings[self.name] = round(seconds, 3)
            self.run.record_metrics("wall_time_s", timings)


def _quiet_tensorflow() -> None:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")


def _timestamp() -> str:
    return datetime.datetime.now().strftime("%Y%m%d-%H%M%S")


if __name__ == "__main__":
    sys.exit(main())
