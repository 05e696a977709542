"""trainer.distribute: TF_CONFIG parsing, who is chief, worker-scoped folders, the tf-config helper, input sharing."""

from __future__ import annotations

import json
import pathlib

import pytest

from trainer import distribute
from trainer.data.tfrecord import Manifest
from trainer.distribute import ClusterRole, DistributeError, role_from_env, tf_config, worker_scoped_dir

from .conftest import as_numpy, assert_same_features, concat_batches

TWO_WORKERS = {"worker": ["h0:1000", "h1:1001"]}


def _env(cluster: dict[str, list[str]], task_type: str, index: int) -> dict[str, str]:
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}})}


def test_no_tf_config_is_one_machine_and_chief() -> None:
    for environ in ({}, {"TF_CONFIG": ""}, {"TF_CONFIG": "  "}):
        role = role_from_env(environ)
        assert role.is_chief and not role.is_distributed and not role.uses_parameter_servers


@pytest.mark.parametrize("cluster, task_type, index, chief, ps", [
    (TWO_WORKERS, "worker", 0, True, False),
    (TWO_WORKERS, "worker", 1, False, False),
    ({"chief": ["c:1"], **TWO_WORKERS}, "worker", 0, False, False),  # with a chief task, worker 0 is not chief
    ({"chief": ["c:1"], **TWO_WORKERS}, "chief", 0, True, False),
    ({"chief": ["c:1"], **TWO_WORKERS, "ps": ["p:2", "p:3"]}, "ps", 1, False, True),
])
def test_roles(cluster: dict[str, list[str]], task_type: str, index: int, chief: bool, ps: bool) -> None:
    role = role_from_env(_env(cluster, task_type, index))
    assert (role.task_type, role.task_id, role.is_chief, role.uses_parameter_servers) == (task_type, index, chief, ps)
    assert role.is_distributed


@pytest.mark.parametrize("text, message", [
    ("{not json", "not valid JSON"),
    ('{"cluster": {"worker": ["h:1"]}}', "must be"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "ps", "index": 0}}), "task type 'ps' is not in the cluster"),
    (json.dumps({"cluster": TWO_WORKERS, "task": {"type": "worker", "index": 2}}), "index 2 is out of range for 2"),
    (json.dumps({"cluster": {"worker": ["no-port"]}, "task": {"type": "worker", "index": 0}}), 'list of "host:port"'),
    (json.dumps({"cluster": {"master": ["h:1"]}, "task": {"type": "master", "index": 0}}), "unknown task type"),
])
def test_bad_tf_config_is_a_clear_error(text: str, message: str) -> None:
    with pytest.raises(DistributeError, match=message):
        role_from_env({"TF_CONFIG": text})


def test_tf_config_round_trips_and_checks() -> None:
    text = tf_config(["a:1", "b:2"], "worker", 1, ps=["p:3"], chief=["c:4"])
    role = role_from_env({"TF_CONFIG": text})
    assert dict(role.cluster) == {"chief": ["c:4"], "worker": ["a:1", "b:2"], "ps": ["p:3"]}
    assert (role.task_type, role.task_id, role.num_workers) == ("worker", 1, 3)
    with pytest.raises(DistributeError, match="needs a chief"):
        tf_config(["a:1"], "worker", 0, ps=["p:3"])
    with pytest.raises(DistributeError, match="out of range"):
        tf_config(["a:1"], "worker", 1)


def test_cli_prints_tf_config_and_fails_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert distribute.main(["tf-config", "--workers", "a:1, b:2", "--index", "1"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cluster": {"worker": ["a:1", "b:2"]},
                                                   "task": {"type": "worker", "index": 1}}
    assert distribute.main(["tf-config", "--workers", "a:1", "--index", "3"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_chief_writes_in_place_others_in_a_deleted_scratch_folder(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "run"
    with worker_scoped_dir(target, ClusterRole("worker", 0, TWO_WORKERS)) as chief_dir:
        assert chief_dir == target
    with worker_scoped_dir(target, ClusterRole("worker", 1, TWO_WORKERS)) as scratch:
        assert scratch != target and not scratch.is_relative_to(target)
        (scratch / "checkpoint").write_text("x")
    assert not scratch.exists() and not target.exists()


def test_one_machine_gets_the_default_strategy() -> None:
    import tensorflow as tf

    assert distribute.strategy_for(role_from_env({})) is tf.distribute.get_strategy()


def test_server_is_only_for_parameter_server_clusters() -> None:
    with pytest.raises(DistributeError, match="worker and ps tasks of a cluster with ps"):
        distribute.run_server(ClusterRole("worker", 0, TWO_WORKERS))


def test_distribute_examples_reads_the_split_through_the_strategy(tiny_prepared: Manifest) -> None:
    import tensorflow as tf

    distributed = distribute.distribute_examples(tf.distribute.get_strategy(), tiny_prepared, "validation", 64)
    expected = concat_batches(list(tiny_prepared.read("validation", 64).as_numpy_iterator()))
    assert_same_features(concat_batches([as_numpy(batch) for batch in distributed]), as_numpy(expected))
    assert len(expected["item_id"]) == tiny_prepared.examples("validation") > 0


PS_CLUSTER = {"chief": ["h:1"], "worker": ["h:2", "h:3"], "ps": ["h:4"]}


@pytest.mark.parametrize(("cluster", "optimizer", "warned"), [
    (PS_CLUSTER, "adam", True), (PS_CLUSTER, "adagrad", False), ({"worker": ["h:1", "h:2"]}, "adam", False),
    ({}, "adam", False),
])
def test_adam_under_parameter_servers_is_warned_about(cluster: dict[str, list[str]], optimizer: str,
                                                       warned: bool) -> None:
    warning = distribute.optimizer_warning(ClusterRole("chief", 0, cluster), optimizer)
    assert (warning is not None) == warned
    if warned:
        assert warning is not None and "--retrieval.optimizer adagrad" in warning
