"""deploy/k8s: the manifests parse, their references resolve, their commands and probes work.

There is no Kubernetes here. What can be checked without it is checked: every object's references
(ConfigMaps, claims, Services, ports, probe scripts), the TF Serving configs against what the export
writes, the readiness script against a real `python -m serving.server`, and the training pods' shell
commands run with a stand-in `python` that records what `trainer.task` would be started with.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from recsys_common import contract
from serving._protos.tensorflow_serving.config import batching_parameters_pb2, monitoring_config_pb2
from trainer import config as config_lib
from trainer import task
from trainer.distribute import role_from_env
from trainer.export import server_configs

from .ps_cluster_runner import PS_OVERRIDES

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NAMESPACE = "recommender"
KNOWN_KINDS = {("v1", "Namespace"), ("v1", "PersistentVolumeClaim"), ("v1", "ConfigMap"), ("v1", "Service"),
               ("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("batch/v1", "Job"),
               ("policy/v1", "PodDisruptionBudget"), ("autoscaling/v2", "HorizontalPodAutoscaler")}
WORKLOADS = ("Deployment", "StatefulSet", "Job")
SERVING = {"tf-serving-stock": server_configs.STOCK_MODELS_CONFIG,
           "tf-serving-scann": server_configs.SCANN_MODELS_CONFIG}


def _documents() -> dict[str, list[dict[str, Any]]]:
    return {path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
            for path in sorted(K8S.glob("*.yaml")) if path.name != "kustomization.yaml"}


DOCUMENTS = _documents()
OBJECTS = [doc for docs in DOCUMENTS.values() for doc in docs]


def _find(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in OBJECTS if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _pod_templates() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in OBJECTS:
        if doc["kind"] in WORKLOADS:
            yield doc, doc["spec"]["template"]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    (container,) = workload["spec"]["template"]["spec"]["containers"]
    return container


def _flags(container: dict[str, Any]) -> dict[str, str]:
    return dict(arg.lstrip("-").split("=", 1) for arg in container["args"])


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {entry["name"]: entry["value"] for entry in container.get("env", [])}


def test_every_object_is_a_known_kind_in_the_namespace() -> None:
    assert len(OBJECTS) >= 15
    for doc in OBJECTS:
        assert (doc["apiVersion"], doc["kind"]) in KNOWN_KINDS, doc["kind"]
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    names = [(doc["kind"], doc["metadata"]["name"]) for doc in OBJECTS]
    assert len(names) == len(set(names)), "duplicate object names"


def test_kustomization_lists_every_manifest_but_the_parameter_server_variant() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == set(DOCUMENTS) - {"training-ps.yaml"}
    images = {image["name"] for image in kustomization["images"]}
    used = {_container(doc)["image"].split(":")[0] for doc, _ in _pod_templates()}
    assert used <= images


def test_pod_references_resolve() -> None:
    for workload, template in _pod_templates():
        name = workload["metadata"]["name"]
        spec = template["spec"]
        if workload["kind"] != "Job":
            assert workload["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items(), name
        volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                _find("ConfigMap", volume["configMap"]["name"])
            if "persistentVolumeClaim" in volume:
                _find("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
        container = _container(workload)
        ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
        for mount in container.get("volumeMounts", []):
            assert mount["name"] in volumes, f"{name}: mount of undeclared volume {mount['name']}"
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            port = container.get(probe, {}).get("tcpSocket", {}).get("port")
            assert port is None or port in ports, f"{name}: {probe} uses unknown port {port}"


def test_services_select_pods_and_their_ports() -> None:
    for service in (doc for doc in OBJECTS if doc["kind"] == "Service"):
        selector = service["spec"]["selector"]
        pods = [(w, t) for w, t in _pod_templates() if selector.items() <= t["metadata"]["labels"].items()]
        assert pods, f"Service {service['metadata']['name']} selects no pods"
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for workload, _ in pods:
                container_ports = {p["name"]: p["containerPort"] for p in _container(workload)["ports"]}
                assert target in container_ports or target in container_ports.values(), (service, target)


def test_disruption_budgets_and_autoscalers_target_the_serving_deployments() -> None:
    for name in SERVING:
        deployment = _find("Deployment", name)
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _find("PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"].items() <= labels.items()
        target = _find("HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert deployment["spec"]["replicas"] >= 2


@pytest.mark.parametrize("name, models_config", SERVING.items())
def test_tf_serving_reads_mounted_configs_and_probes_its_models(name: str, models_config: str) -> None:
    deployment = _find("Deployment", name)
    container = _container(deployment)
    flags = _flags(container)
    mounts = {mount["name"]: mount["mountPath"] for mount in container["volumeMounts"]}
    config_map = _find("ConfigMap", "tf-serving-config")["data"]
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        path = pathlib.PurePosixPath(flags[flag])
        assert str(path.parent) == mounts["config"] and path.name in config_map, flag
    assert pathlib.PurePosixPath(flags["model_config_file"]).name == models_config
    ports = {port["name"]: str(port["containerPort"]) for port in container["ports"]}
    assert (flags["port"], flags["rest_api_port"]) == (ports["grpc"], ports["http"])
    assert flags["enable_batching"] == "true"
    bash, script, config, port = container["readinessProbe"]["exec"]["command"]
    assert (bash, pathlib.PurePosixPath(script).name, config, port) == ("bash", "ready.sh", flags["model_config_file"],
                                                                         ports["http"])
    served = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(config_map[models_config], served)
    for model in served.model_config_list.config:
        assert pathlib.PurePosixPath(model.base_path) == pathlib.PurePosixPath(mounts["saved-models"]) / model.name
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"] == \
        server_configs.PROMETHEUS_PATH


def test_config_map_holds_what_the_export_writes(tmp_path: pathlib.Path) -> None:
    for name in contract.MODEL_NAMES:
        (tmp_path / name / "1").mkdir(parents=True)
    written = server_configs.write_server_configs(tmp_path, contract.MODEL_NAMES)
    config_map = _find("ConfigMap", "tf-serving-config")["data"]
    messages = {server_configs.STOCK_MODELS_CONFIG: model_server_config_pb2.ModelServerConfig,
                server_configs.SCANN_MODELS_CONFIG: model_server_config_pb2.ModelServerConfig,
                contract.BATCHING_CONFIG: batching_parameters_pb2.BatchingParameters,
                contract.MONITORING_CONFIG: monitoring_config_pb2.MonitoringConfig}
    for file_name, message_type in messages.items():
        ours, exported = message_type(), message_type()
        text_format.Parse(config_map[file_name], ours)
        text_format.Parse(written[file_name].read_text(), exported)
        assert ours == exported, file_name
    assert config_map["ready.sh"] == (K8S / "ready.sh").read_text()


@pytest.fixture(scope="module")
def served_export(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[pathlib.Path, int]]:
    """Synthetic ranking + brute-force retrieval exports served by `python -m serving.server`."""
    from bench.synthetic_models import export_synthetic_models, make_catalog
    from serving.testing import running_server

    base = tmp_path_factory.mktemp("saved_models")
    models = (contract.RETRIEVAL_BRUTEFORCE, contract.RANKING)
    export_synthetic_models(base, make_catalog(30, dim=4), models, k=5)
    written = server_configs.write_server_configs(base, models)
    with running_server(model_config_file=written[server_configs.LOCAL_MODELS_CONFIG], wait_for=models) as server:
        yield written[server_configs.LOCAL_MODELS_CONFIG], server.rest_port


def _ready(config: pathlib.Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(K8S / "ready.sh"), str(config), str(port)], capture_output=True, text=True,
                          timeout=30, check=False)


def test_readiness_script_passes_when_every_model_is_available(served_export: tuple[pathlib.Path, int]) -> None:
    config, port = served_export
    done = _ready(config, port)
    assert done.returncode == 0, done.stderr


def test_readiness_script_fails_for_a_model_not_served(served_export: tuple[pathlib.Path, int],
                                                       tmp_path: pathlib.Path) -> None:
    config, port = served_export
    with_missing = tmp_path / "models.config"
    with_missing.write_text(config.read_text().replace(f'name: "{contract.RANKING}"', 'name: "not_exported"'))
    done = _ready(with_missing, port)
    assert done.returncode == 1 and "model not_exported has no AVAILABLE version" in done.stderr


def test_readiness_script_fails_when_nothing_listens(served_export: tuple[pathlib.Path, int]) -> None:
    from serving.testing import free_port

    assert _ready(served_export[0], free_port()).returncode != 0


@pytest.fixture()
def stand_in_python(tmp_path: pathlib.Path) -> pathlib.Path:
    """A `python` on PATH that runs trainer.distribute for real and, for trainer.task, prints its TF_CONFIG and args."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "python"
    script.write_text(f"""#!/bin/sh
if [ "$2" = "trainer.task" ]; then shift 2; printf '%s\\n' "$TF_CONFIG" "$@"; exit 0; fi
exec {shlex.quote(sys.executable)} "$@"
""")
    script.chmod(0o755)
    return folder


def _run_pod_command(container: dict[str, Any], bin_dir: pathlib.Path, **env: str) -> list[str]:
    """Runs the container's `sh -c` command with its env; returns [TF_CONFIG, trainer.task args...]."""
    assert container["command"] == ["/bin/sh", "-c"]
    environ = {**os.environ, **_env(container), **env, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
               "PYTHONPATH": str(ROOT)}
    done = subprocess.run(["/bin/sh", "-c", container["args"][0]], env=environ, capture_output=True, text=True,
                          timeout=60, check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def _check_task_args(args: list[str]) -> argparse.Namespace:
    """Checks the trainer.task flags of a pod; returns them parsed."""
    parsed = task.build_parser().parse_args(args)
    config = pathlib.PurePosixPath(parsed.config)
    assert config.parts[:3] == ("/", "app", "configs") and (ROOT / "configs" / config.name).is_file()
    assert "COPY configs/ configs/" in (ROOT / "deploy" / "docker" / "Dockerfile").read_text()
    assert parsed.output_dir == "/saved_models" and parsed.run_name
    return parsed


def test_multi_worker_job_gives_each_pod_its_tf_config(stand_in_python: pathlib.Path) -> None:
    job = _find("Job", "trainer")
    template = job["spec"]["template"]
    service = _find("Service", template["spec"]["subdomain"])
    assert service["spec"]["clusterIP"] == "None"
    container = _container(job)
    port = service["spec"]["ports"][0]["port"]
    workers = job["spec"]["completions"]
    assert job["spec"]["parallelism"] == workers and job["spec"]["completionMode"] == "Indexed"
    expected_hosts = [f"trainer-{index}.{service['metadata']['name']}:{port}" for index in range(workers)]
    assert _env(container)["WORKER_HOSTS"].split(",") == expected_hosts
    mounts = {mount["mountPath"] for mount in container["volumeMounts"]}
    for index in range(workers):
        tf_config, *args = _run_pod_command(container, stand_in_python, JOB_COMPLETION_INDEX=str(index))
        role = role_from_env({"TF_CONFIG": tf_config})
        assert (role.task_type, role.task_id, role.num_workers) == ("worker", index, workers)
        assert role.is_chief == (index == 0) and not role.uses_parameter_servers
        _check_task_args(args)
        flags = dict(zip(args[::2], args[1::2]))
        assert {flags["--run_dir"], flags["--output-dir"]} <= mounts


def test_parameter_server_variant_describes_one_cluster(stand_in_python: pathlib.Path) -> None:
    roles = {}
    for kind, name, task_type in (("StatefulSet", "trainer-ps", "ps"), ("StatefulSet", "trainer-ps-worker", "worker"),
                                  ("Job", "trainer-coordinator", "chief")):
        workload = _find(kind, name)
        container = _container(workload)
        replicas = workload["spec"]["replicas"] if kind == "StatefulSet" else workload["spec"]["completions"]
        service = workload["spec"].get("serviceName") or workload["spec"]["template"]["spec"]["subdomain"]
        assert _find("Service", service)["spec"]["clusterIP"] == "None"
        env_key = {"ps": "PS_HOSTS", "worker": "WORKER_HOSTS", "chief": "CHIEF_HOST"}[task_type]
        assert _env(container)[env_key].split(",") == [f"{name}-{i}.{service}:12345" for i in range(replicas)]
        for index in range(replicas):
            if task_type == "chief":
                tf_config, *args = _run_pod_command(container, stand_in_python, HOSTNAME=f"{name}-{index}")
                overrides = config_lib.overrides_from_args(_check_task_args(args))
                optimizer = {key: overrides.get(key) for key in ("retrieval.optimizer", "retrieval.learning_rate")}
                assert optimizer == {key: PS_OVERRIDES[key] for key in optimizer}  # what the PS test trains with
                assert optimizer["retrieval.optimizer"] == "adagrad", overrides
            else:  # the servers run until deleted: run the command up to the server's start
                server = "exec python -m trainer.distribute server"
                assert container["args"][0].endswith(server)
                shown = {**container, "args": [container["args"][0].replace(server, 'printf "%s\\n" "$TF_CONFIG"')]}
                (tf_config,) = _run_pod_command(shown, stand_in_python, HOSTNAME=f"{name}-{index}")
            roles[(task_type, index)] = role_from_env({"TF_CONFIG": tf_config})
            assert (roles[(task_type, index)].task_type, roles[(task_type, index)].task_id) == (task_type, index)
    clusters = {json.dumps(role.cluster, sort_keys=True) for role in roles.values()}
    assert len(clusters) == 1, "every task must see the same cluster"
    assert all(role.uses_parameter_servers for role in roles.values())
    assert [key for key, role in roles.items() if role.is_chief] == [("chief", 0)]
