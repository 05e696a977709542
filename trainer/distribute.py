"""Training on several machines with tf.distribute, configured by the standard TF_CONFIG variable.

    TF_CONFIG='{"cluster": {"worker": ["host0:12345", "host1:12345"]}, "task": {"type": "worker", "index": 0}}'

- No TF_CONFIG (or a one-task cluster): the default strategy, one machine, as before.
- Workers only: `MultiWorkerMirroredStrategy`. Every worker runs the same program
  (`python -m trainer.task ...`); the retrieval and ranking models are built under the strategy,
  each worker reads its share of every global batch (Keras `fit` for retrieval, the ranking loop's
  `strategy.run`) and the gradients are all-reduced, so the weights stay identical on every
  worker. The chief (the "chief" task, else worker 0) writes the run folder and exports; the
  others write into scratch folders that they delete (`worker_scoped_config`) and stop before the
  export. They must write while training: saving a checkpoint of mirrored variables takes every
  worker.
- A "ps" task type in the cluster: `ParameterServerStrategy`, for embedding tables larger than one
  machine. Variables live on the parameter servers; a variable larger than `min_shard_bytes` is
  split row-wise over up to all of them (`MinSizePartitioner`), so an embedding table of any size
  spreads over the ps tasks and each step only gathers the rows it uses. The chief (the
  coordinator) runs `python -m trainer.task`; the worker and ps tasks run
  `python -m trainer.distribute server` and execute what the coordinator schedules. Keras `fit`
  then needs `steps_per_epoch` and a dataset function (see `distribute_examples`).

Build TF_CONFIG for a cluster (e.g. in a Kubernetes Job, deploy/k8s/) with
`python -m trainer.distribute tf-config --workers h0:port,h1:port --index $JOB_COMPLETION_INDEX`.
The strategy must be created before TensorFlow runs any operation in the process.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # TensorFlow loads lazily: `tf-config` is a quick shell helper
    import tensorflow as tf

    from trainer.config import Config

TF_CONFIG = "TF_CONFIG"
TASK_TYPES = ("chief", "worker", "ps", "evaluator")
DEFAULT_MIN_SHARD_BYTES = 256 << 10


class DistributeError(ValueError):
    """A cluster description that cannot be used; the message names what is wrong."""


@dataclasses.dataclass(frozen=True)
class ClusterRole:
    """This process's place in the cluster.

    Attributes:
        task_type: "chief", "worker", "ps" or "evaluator" ("worker" on one machine).
        task_id: the index of this task within its type.
        cluster: task type -> ["host:port", ...] ({} on one machine).
    """

    task_type: str = "worker"
    task_id: int = 0
    cluster: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)

    @property
    def is_distributed(self) -> bool:
        return sum(len(hosts) for hosts in self.cluster.values()) > 1

    @property
    def uses_parameter_servers(self) -> bool:
        return bool(self.cluster.get("ps"))

    @property
    def is_chief(self) -> bool:
        """The task that writes: the chief, else worker 0 (TF's convention)."""
        if self.cluster.get("chief"):
            return self.task_type == "chief"
        return self.task_type == "worker" and self.task_id == 0

    @property
    def num_workers(self) -> int:
        return len(self.cluster.get("worker", ())) + len(self.cluster.get("chief", ()))


def role_from_env(environ: Mapping[str, str] | None = None) -> ClusterRole:
    """The role described by TF_CONFIG (one machine when it is unset or empty).

    Raises:
        DistributeError: TF_CONFIG is not JSON, lacks cluster/task, or names a task not in the cluster.
    """
    text = (os.environ if environ is None else environ).get(TF_CONFIG, "").strip()
    if not text:
        return ClusterRole()
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise DistributeError(f"{TF_CONFIG} is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("cluster"), dict) or not isinstance(raw.get("task"), dict):
        raise DistributeError(f'{TF_CONFIG} must be {{"cluster": {{type: [host:port, ...]}}, "task": {{"type": ..., '
                              f'"index": ...}}}}, got {text[:200]}')
    cluster = _checked_cluster(raw["cluster"])
    task_type, task_id = raw["task"].get("type"), raw["task"].get("index", 0)
    if task_type not in cluster:
        raise DistributeError(f"{TF_CONFIG}: task type {task_type!r} is not in the cluster ({sorted(cluster)})")
    if not isinstance(task_id, int) or not 0 <= task_id < len(cluster[task_type]):
        raise DistributeError(f"{TF_CONFIG}: task index {task_id!r} is out of range for {len(cluster[task_type])} "
                              f"{task_type} task(s)")
    return ClusterRole(task_type, task_id, cluster)


def optimizer_warning(role: ClusterRole, optimizer: str) -> str | None:
    """Why `optimizer` is a poor choice for the retrieval embeddings under `role`'s strategy, or None.

    Keras' sparse Adam update is five separate ops on the parameter servers (decay both moments over the
    whole table, two scatter-adds, the step), which asynchronous workers interleave: the loss can spike
    and the model end no better than popularity. Adagrad's sparse update is one fused kernel.
    """
    if role.uses_parameter_servers and optimizer == "adam":
        return ("retrieval.optimizer adam under parameter servers: asynchronous workers interleave the parts of "
                "Keras' sparse Adam update, which can make training diverge; use --retrieval.optimizer adagrad "
                "--retrieval.learning_rate 0.1 (deploy/README.md, parameter servers)")
    return None


def strategy_for(role: ClusterRole, min_shard_bytes: int = DEFAULT_MIN_SHARD_BYTES) -> tf.distribute.Strategy:
    """The tf.distribute strategy of `role` (see the module docstring).

    Args:
        role: from `role_from_env`.
        min_shard_bytes: with parameter servers, variables are split into shards of at least this size.
    """
    import tensorflow as tf

    if not role.is_distributed:
        return tf.distribute.get_strategy()
    resolver = _resolver(role)
    if role.uses_parameter_servers:
        partitioner = tf.distribute.experimental.partitioners.MinSizePartitioner(
            min_shard_bytes=min_shard_bytes, max_shards=len(role.cluster["ps"]))
        return tf.distribute.experimental.ParameterServerStrategy(resolver, variable_partitioner=partitioner)
    return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


@contextlib.contextmanager
def worker_scoped_dir(path: str | pathlib.Path, role: ClusterRole) -> Iterator[pathlib.Path]:
    """`path` for the chief; for any other task a fresh temporary folder, deleted on exit.

    Args:
        path: where the chief writes (a run folder, the saved_models folder).
        role: this process's role.
    """
    if role.is_chief:
        yield pathlib.Path(path)
        return
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f"{pathlib.Path(path).name}-{role.task_type}{role.task_id}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@contextlib.contextmanager
def worker_scoped_config(config: Config, role: ClusterRole, run_name: str) -> Iterator[Config]:
    """`config` for the chief; for the other tasks a copy that writes into scratch folders, deleted on exit.

    The scratch run folder starts with a copy of the chief's checkpoints of run `run_name` (when the run
    folder is shared storage, as in deploy/k8s), so a restarted job resumes from the same epoch on every
    worker, as the all-reduce needs.

    Args:
        config: the run config (run_dir and export.output_dir are the chief's folders).
        role: this process's role.
        run_name: the run folder's name under run_dir.
    """
    if role.is_chief:
        yield config
        return
    with worker_scoped_dir(config.run_dir, role) as run_dir, \
            worker_scoped_dir(config.export.output_dir, role) as output_dir:
        checkpoints = pathlib.Path(config.run_dir) / run_name / "checkpoints"
        if checkpoints.is_dir():
            shutil.copytree(checkpoints, run_dir / run_name / "checkpoints")
        yield dataclasses.replace(config, run_dir=str(run_dir),
                                  export=dataclasses.replace(config.export, output_dir=str(output_dir)))


def distribute_examples(strategy: tf.distribute.Strategy, manifest: Any, split: str, global_batch_size: int,
                        **options: Any) -> Any:
    """The TFRecord examples of `split`, each input pipeline reading its own share.

    Args:
        strategy: the strategy the model is trained with.
        manifest: a `trainer.data.tfrecord.Manifest`.
        split: "train", "validation" or "test".
        global_batch_size: examples per step over all replicas.
        **options: more `Manifest.read` options (shuffle, seed, repeat, ...).

    Returns:
        A distributed dataset for `model.fit` (per-replica batches of global_batch_size / replicas).
    """
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        batch_size = context.get_per_replica_batch_size(global_batch_size)
        return manifest.read(split, batch_size, input_context=context, **options)

    return strategy.distribute_datasets_from_function(dataset_fn)


def tf_config(workers: Sequence[str], task_type: str, index: int, ps: Sequence[str] = (),
              chief: Sequence[str] = ()) -> str:
    """The TF_CONFIG JSON of one task.

    Args:
        workers: "host:port" of every worker.
        task_type: this task's type.
        index: this task's index within its type.
        ps: "host:port" of the parameter servers (parameter-server training).
        chief: "host:port" of the chief/coordinator (required with ps).
    """
    cluster = {name: list(hosts) for name, hosts in (("chief", chief), ("worker", workers), ("ps", ps)) if hosts}
    if ps and not chief:
        raise DistributeError("parameter-server training needs a chief (the coordinator): give --chief host:port")
    text = json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})
    role_from_env({TF_CONFIG: text})  # the same checks as a reader applies
    return text


def run_server(role: ClusterRole) -> None:
    """Serves this worker or ps task of a parameter-server cluster until the coordinator is done (never returns)."""
    if role.task_type not in ("worker", "ps") or not role.uses_parameter_servers:
        raise DistributeError(f"`server` is for the worker and ps tasks of a cluster with ps tasks; this task is "
                              f"{role.task_type} {role.task_id} of {dict(role.cluster)}")
    import tensorflow as tf

    server = tf.distribute.Server(_resolver(role).cluster_spec(), job_name=role.task_type, task_index=role.task_id,
                                  protocol="grpc", start=True)
    server.join()


def _resolver(role: ClusterRole) -> tf.distribute.cluster_resolver.ClusterResolver:
    import tensorflow as tf

    cluster = tf.train.ClusterSpec({name: list(hosts) for name, hosts in role.cluster.items()})
    return tf.distribute.cluster_resolver.SimpleClusterResolver(cluster, task_type=role.task_type,
                                                                task_id=role.task_id, rpc_layer="grpc")


def _checked_cluster(cluster: dict[str, Any]) -> dict[str, list[str]]:
    checked = {}
    for task_type, hosts in cluster.items():
        if task_type not in TASK_TYPES:
            raise DistributeError(f"{TF_CONFIG}: unknown task type {task_type!r}; use {', '.join(TASK_TYPES)}")
        if not isinstance(hosts, list) or not all(isinstance(h, str) and _is_address(h) for h in hosts):
            raise DistributeError(f"{TF_CONFIG}: cluster.{task_type} must be a list of \"host:port\", got {hosts!r}")
        checked[task_type] = hosts
    if len(checked.get("chief", [])) > 1:
        raise DistributeError(f"{TF_CONFIG}: at most one chief, got {checked['chief']}")
    return checked


def _is_address(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.distribute", description=__doc__.splitlines()[0]
                                     if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    config = commands.add_parser("tf-config", help="print the TF_CONFIG of one task")
    config.add_argument("--workers", required=True, help="comma-separated host:port of the workers")
    config.add_argument("--ps", default="", help="comma-separated host:port of the parameter servers")
    config.add_argument("--chief", default="", help="host:port of the chief (coordinator)")
    config.add_argument("--type", default="worker", choices=TASK_TYPES, help="this task's type")
    config.add_argument("--index", type=int, required=True, help="this task's index within its type")
    commands.add_parser("server", help="run this worker/ps task of a parameter-server cluster (TF_CONFIG)")
    args = parser.parse_args(argv)
    try:
        if args.command == "tf-config":
            print(tf_config(_split(args.workers), args.type, args.index, _split(args.ps), _split(args.chief)))
        else:
            run_server(role_from_env())
    except DistributeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _split(hosts: str) -> list[str]:
    return [host.strip() for host in hosts.split(",") if host.strip()]


if __name__ == "__main__":
    sys.exit(main())
